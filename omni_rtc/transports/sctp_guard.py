"""Make aiortc's data-channel receive path survive hostile input.

aiortc decodes text messages and reassembles fragments inside its SCTP receive loop; an
exception there (invalid UTF-8, an assertion on a malformed control message) ends the
whole peer connection, and a 16 MB message costs ~20 CPU-seconds of quadratic
reassembly although we advertise a 256 KiB limit.  :func:`install` patches two methods
of ``RTCSctpTransport`` once per process: messages over the advertised limit are
discarded as their fragments arrive (and reported to the channel as an empty binary
message, which the call answers with an error), invalid UTF-8 arrives as bytes, and no
single bad message can raise out of the receive loop.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc import rtcsctptransport as sctp
from aiortc.utils import uint16_add

log = logging.getLogger("omni_rtc.webrtc")

MAX_MESSAGE_BYTES: int = getattr(sctp, "LOCAL_MAX_MESSAGE_SIZE", 262_144)
"""What aiortc advertises in ``a=max-message-size``; we now enforce it."""

_REQUIRED = (
    "_data_channel_receive",
    "_receive_data_chunk",
    "_mark_received",
    "_get_inbound_stream",
    "_receive",
    "_reset_deferred_streams",
)
_installed = False


def install() -> bool:
    """Patch aiortc (idempotent); False, with a warning, if aiortc's layout changed."""
    global _installed
    if _installed:
        return True
    transport = sctp.RTCSctpTransport
    missing = [name for name in _REQUIRED if not hasattr(transport, name)]
    flags = ("SCTP_DATA_FIRST_FRAG", "SCTP_DATA_LAST_FRAG", "SCTP_DATA_UNORDERED")
    constants = ("WEBRTC_STRING", "WEBRTC_BINARY", *flags)
    missing += [name for name in constants if not hasattr(sctp, name)]
    if missing or not hasattr(sctp, "InboundStream"):
        log.warning("aiortc's SCTP layout changed (%s): data channels are not hardened", missing)
        return False
    original_receive = transport._data_channel_receive

    async def data_channel_receive(self: Any, stream_id: int, pp_id: int, data: bytes) -> None:
        if pp_id == sctp.WEBRTC_STRING:
            try:
                data.decode("utf8")
            except UnicodeDecodeError:
                pp_id = sctp.WEBRTC_BINARY  # the channel gets bytes; the call says why
        try:
            await original_receive(self, stream_id, pp_id, data)
        except Exception as exc:  # one bad message must not end the connection
            log.warning("dropped a malformed data-channel message: %r", exc)

    setattr(transport, "_data_channel_receive", data_channel_receive)  # noqa: B010
    setattr(transport, "_receive_data_chunk", _receive_data_chunk)  # noqa: B010
    _installed = True
    return True


async def _receive_data_chunk(self: Any, chunk: Any) -> None:
    """aiortc's own method, with the message size limit applied before reassembly."""
    self._sack_needed = True
    if self._mark_received(chunk.tsn):
        return
    stream = self._get_inbound_stream(chunk.stream_id)
    if _discarding(self, stream, chunk):
        await self._reset_deferred_streams()
        return
    stream.add_chunk(chunk)
    self._advertised_rwnd -= len(chunk.user_data)
    for message in stream.pop_messages():
        self._advertised_rwnd += len(message[2])
        await self._receive(*message)
    await self._reset_deferred_streams()


def _discarding(transport: Any, stream: Any, chunk: Any) -> bool:
    """True when ``chunk`` belongs to a message over the limit (it is then dropped)."""
    unordered = bool(chunk.flags & sctp.SCTP_DATA_UNORDERED)
    last = bool(chunk.flags & sctp.SCTP_DATA_LAST_FRAG)
    key = ("u",) if unordered else ("o", chunk.stream_seq)
    discard: set[tuple[Any, ...]] = stream.__dict__.setdefault("_omni_discard", set())
    if key in discard:
        if last:
            discard.discard(key)
            _skip_sequence(stream, chunk, unordered)
        return True
    pending = sum(len(c.user_data) for c in stream.reassembly)
    if pending + len(chunk.user_data) <= MAX_MESSAGE_BYTES:
        return False
    # Over the limit: forget the partial message and everything it held up.
    transport._advertised_rwnd += pending
    stream.reassembly = []
    log.warning(
        "data channel on stream %d: message over %d bytes discarded",
        chunk.stream_id,
        MAX_MESSAGE_BYTES,
    )
    if last:
        _skip_sequence(stream, chunk, unordered)
    else:
        discard.add(key)
    channel = transport._data_channels.get(chunk.stream_id)
    if channel is not None:
        channel.emit("message", b"")  # the call answers: messages must be short JSON text
    return True


def _skip_sequence(stream: Any, chunk: Any, unordered: bool) -> None:
    """Ordered delivery must not wait forever for the message we dropped."""
    if not unordered and chunk.stream_seq == stream.sequence_number:
        stream.sequence_number = uint16_add(stream.sequence_number, 1)

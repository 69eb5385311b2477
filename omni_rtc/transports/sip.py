"""SIP transport: calls answered by :mod:`omni_rtc.sip` adapted to conversations.

The SIP layer negotiates the codec and runs RTP; this adapter gives each answered call
a :class:`Conversation` whose reply sink is the call's paced ``ReplyTrack`` at the
codec's rate (8 kHz G.711, 16 kHz G.722, 48 kHz Opus: the conversation resamples the
model's 24 kHz once), feeds it the decoded caller audio and DTMF, and hangs up (BYE)
when the conversation ends on its own (a limit, the model service gone for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ..calls import CallOptions, CapacityError
from ..conversation.core import Conversation
from ..conversation.events import ConversationEvent, Ended
from ..sip.handler import SipCall
from ..sip.server import SipConfig, SipServer

if TYPE_CHECKING:
    from ..bridge import Bridge

log = logging.getLogger("omni_rtc.sip")

SIP_ENDINGS = {
    "remote BYE": "peer_closed",
    "CANCEL": "peer_closed",
    "no ACK": "peer_timeout",
    "shutdown": "server_shutdown",
}
"""The SIP layer's reasons, in the words every transport's calls end with."""
RTP_SILENCE_S = 30.0
"""A caller whose RTP stopped this long (not on hold) is gone without a BYE."""


class SipConversation:
    """One SIP call in the bridge's registry (what ``DELETE /calls/{id}`` can end)."""

    transport = "sip"

    def __init__(self, call: SipCall, conversation: Conversation) -> None:
        self.call = call
        self.conversation = conversation
        self.closed = asyncio.Event()
        self.last_audio = time.monotonic()

    @property
    def id(self) -> str:
        return self.conversation.id

    @property
    def ended_reason(self) -> str | None:
        return self.conversation.ended_reason

    async def close(self, reason: str = "hangup") -> None:
        """End from our side: BYE to the caller; the SIP layer then reports the end."""
        if not self.call.ended:
            self.call.hangup(reason)
        await self.conversation.close(reason)
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(self.closed.wait(), 5)


class SipGateway:
    """The :class:`~omni_rtc.sip.handler.SipCallHandler` that puts callers through to
    the model, within the bridge's shared call limit."""

    def __init__(self, bridge: Bridge, options: CallOptions | None = None) -> None:
        self.bridge = bridge
        self.options = options or CallOptions()
        self.calls: dict[str, SipConversation] = {}

    def has_room(self) -> bool:
        return self.bridge.calls.has_room

    async def call_started(self, call: SipCall) -> None:
        """Runs for the whole call (the SIP server owns and cancels this task)."""
        bridge = self.bridge
        conversation = bridge.conversation(call.reply_track, self.options, transport="sip")
        entry = SipConversation(call, conversation)
        self.calls[call.id] = entry
        conversation.add_listener(lambda event: self._on_event(entry, event))
        try:
            with bridge.calls.reserve("sip"):
                await bridge.start_conversation(conversation)
                bridge.calls.add(entry)
        except Exception as exc:  # the model service, capacity: the caller hears a BYE
            log.warning("call %s: cannot put the caller through: %s", call.id, exc)
            call.hangup("server_busy" if isinstance(exc, CapacityError) else "upstream_unavailable")
            return
        log.info(
            "call %s: SIP call from %s (%s) is conversation %s",
            call.id,
            call.caller,
            call.codec.name,
            conversation.id,
        )
        while not conversation.closed.is_set():
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(conversation.closed.wait(), 5.0)
            silent = time.monotonic() - entry.last_audio
            if silent > RTP_SILENCE_S and not call.on_hold and not call.ended:
                await conversation.close("peer_failed", f"no RTP for {silent:.0f} s")
                call.hangup("peer_failed")

    def caller_audio(self, call: SipCall, pcm: bytes, rate: int) -> None:
        entry = self.calls.get(call.id)
        if entry is not None:
            entry.last_audio = time.monotonic()
            entry.conversation.push_audio(pcm, rate)

    def dtmf(self, call: SipCall, digit: str, duration_ms: int) -> None:
        entry = self.calls.get(call.id)
        if entry is not None:
            entry.conversation.dtmf(digit, duration_ms)

    async def call_ended(self, call: SipCall, reason: str) -> None:
        entry = self.calls.pop(call.id, None)
        if entry is None:
            return
        await entry.conversation.close(SIP_ENDINGS.get(reason, reason))
        entry.closed.set()

    def _on_event(self, entry: SipConversation, event: ConversationEvent) -> None:
        if isinstance(event, Ended) and not entry.call.ended:
            entry.call.hangup(event.reason)  # BYE: the conversation is over


async def start_sip(bridge: Bridge, config: SipConfig) -> SipServer:
    """Answer SIP calls with ``bridge``'s model sessions; stop the server when done."""
    server = SipServer(config, SipGateway(bridge))
    await server.start()
    return server

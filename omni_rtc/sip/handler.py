"""What a SIP call looks like to the layer above (the conversation wiring, the demo)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from omni_rtc.media.reply_track import ReplyTrack
from omni_rtc.sip.sdp import Codec
from omni_rtc.sip.transaction import Peer

if TYPE_CHECKING:
    from omni_rtc.sip.media import RtpEndpoint


class SipCall:
    """One answered call. ``reply_track`` takes pcm16 mono at ``audio_rate`` (push, flush
    at barge-in); caller audio and DTMF arrive through the handler's callbacks."""

    def __init__(
        self,
        call_id: str,
        caller: str,
        source: Peer,
        media: RtpEndpoint,
        hangup: Callable[[str], None],
    ) -> None:
        self.id = call_id
        self.caller = caller
        """The caller's From URI."""
        self.source = source
        self.media = media
        self._hangup = hangup
        self.started_at = time.monotonic()
        self.ended: str | None = None
        """The end reason, once ended."""

    @property
    def codec(self) -> Codec:
        assert self.media.choice is not None
        return self.media.choice.codec

    @property
    def audio_rate(self) -> int:
        """The codec's natural rate: 8000 (G.711), 16000 (G.722), 48000 (Opus)."""
        return self.media.reply_track.sample_rate if self.media.reply_track else 0

    @property
    def reply_track(self) -> ReplyTrack:
        assert self.media.reply_track is not None
        return self.media.reply_track

    @property
    def on_hold(self) -> bool:
        return self.media.on_hold

    def hangup(self, reason: str = "hangup") -> None:
        """End the call from our side (BYE); the handler's ``call_ended`` follows."""
        self._hangup(reason)

    def __repr__(self) -> str:
        return f"SipCall({self.id}, {self.caller})"


class SipCallHandler(Protocol):
    """Implemented by whatever talks to the caller (the conversation core, the demo)."""

    def has_room(self) -> bool:
        """False answers the INVITE 503 + Retry-After (or 486, see SipConfig.busy_status)."""
        ...

    async def call_started(self, call: SipCall) -> None:
        """The caller ACKed our 200 and media flows; runs as a task the server owns
        (cancelled when the call ends; an exception hangs the call up)."""
        ...

    def caller_audio(self, call: SipCall, pcm: bytes, rate: int) -> None:
        """Decoded caller audio: mono pcm16 at the codec's natural rate."""
        ...

    def dtmf(self, call: SipCall, digit: str, duration_ms: int) -> None:
        """One RFC 4733 key press (0-9, *, #, A-D)."""
        ...

    async def call_ended(self, call: SipCall, reason: str) -> None:
        """Media is already closed; called once for every call that started."""
        ...

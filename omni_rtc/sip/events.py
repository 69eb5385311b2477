"""What the sans-I/O user agent tells the layer above: bytes to send and call events."""

from __future__ import annotations

from dataclasses import dataclass

from omni_rtc.sip.sdp import MediaChoice
from omni_rtc.sip.transaction import Peer, Send


@dataclass
class CallOffered:
    call: str
    caller: str
    choice: MediaChoice | None
    """None when the INVITE had no SDP: we offer in the 2xx, media is chosen on ACK."""
    source: Peer


@dataclass
class CallConfirmed:
    call: str
    choice: MediaChoice


@dataclass
class MediaChanged:
    call: str
    choice: MediaChoice


@dataclass
class CallEnded:
    call: str
    reason: str


Event = CallOffered | CallConfirmed | MediaChanged | CallEnded
Output = Send | Event

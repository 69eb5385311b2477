"""SDP (RFC 4566) offer/answer (RFC 3264) for one RTP/AVP audio stream.

Codecs: PCMU/0, PCMA/8, G722/9 (8000 Hz RTP clock for 16 kHz audio), opus/48000/2
(dynamic), telephone-event/8000 (RFC 4733, dynamic).  The answer takes the caller's
first listed codec that we support.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

MIN_PTIME = 10
MAX_PTIME = 60
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_REVERSE = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly"}


class SdpError(ValueError):
    """An SDP body that cannot be used."""


@dataclass(frozen=True)
class Codec:
    name: str
    """Canonical encoding name as written in rtpmap (PCMU, PCMA, G722, opus)."""
    clock_rate: int
    """RTP timestamp clock."""
    audio_rate: int
    """Sample rate of the audio the codec carries (G.722: 16000 on an 8000 Hz clock)."""
    channels: int = 1
    static_pt: int | None = None
    fmtp: str = ""

    @property
    def av_name(self) -> str:
        return {"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw", "G722": "g722", "opus": "libopus"}[
            self.name
        ]


PCMU = Codec("PCMU", 8000, 8000, static_pt=0)
PCMA = Codec("PCMA", 8000, 8000, static_pt=8)
G722 = Codec("G722", 8000, 16000, static_pt=9)
OPUS = Codec("opus", 48000, 48000, channels=2, fmtp="useinbandfec=1; stereo=0; sprop-stereo=0")
SUPPORTED = (OPUS, G722, PCMU, PCMA)
"""Our own preference when we make the offer (INVITE without SDP)."""
OPUS_PT = 111
TELEPHONE_EVENT_PT = 101
_STATIC = {0: PCMU, 8: PCMA, 9: G722}


@dataclass
class MediaLine:
    media: str
    port: int
    proto: str
    formats: list[str]
    rtpmap: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    """pt -> (encoding name, clock rate, channels)."""
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str | None = None
    ptime: int | None = None
    connection: str | None = None


@dataclass
class SessionDescription:
    origin: str = ""
    connection: str | None = None
    direction: str = "sendrecv"
    media: list[MediaLine] = field(default_factory=list)

    @classmethod
    def parse(cls, body: bytes) -> SessionDescription:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("SDP is not UTF-8") from None
        sdp = cls()
        current: MediaLine | None = None
        seen_version = False
        for raw in text.replace("\r\n", "\n").split("\n"):
            line = raw.strip()
            if not line:
                continue
            if len(line) < 2 or line[1] != "=":
                raise SdpError(f"bad SDP line {line[:40]!r}")
            kind, value = line[0], line[2:]
            if kind == "v":
                seen_version = True
            elif kind == "o":
                sdp.origin = value
            elif kind == "c":
                address = _connection_address(value)
                if current is None:
                    sdp.connection = address
                else:
                    current.connection = address
            elif kind == "m":
                current = _media_line(value)
                sdp.media.append(current)
            elif kind == "a":
                _attribute(sdp, current, value)
        if not seen_version:
            raise SdpError("no v= line")
        return sdp

    def audio(self) -> tuple[int, MediaLine] | None:
        for index, media in enumerate(self.media):
            if media.media == "audio" and media.port != 0:
                return index, media
        return None


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line {value[:40]!r}")
    address = parts[2].split("/")[0]
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise SdpError(f"c= address is not an IP address: {address[:40]!r}") from None
    return address


def _media_line(value: str) -> MediaLine:
    parts = value.split()
    if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
        raise SdpError(f"bad m= line {value[:40]!r}")
    port = int(parts[1].split("/")[0])
    if port > 65535:
        raise SdpError("m= port out of range")
    return MediaLine(parts[0], port, parts[2], parts[3:])


def _attribute(sdp: SessionDescription, media: MediaLine | None, value: str) -> None:
    name, _, rest = value.partition(":")
    if name in DIRECTIONS:
        if media is None:
            sdp.direction = name
        else:
            media.direction = name
        return
    if media is None:
        return
    if name == "rtpmap":
        pt_text, _, enc = rest.partition(" ")
        enc_parts = enc.strip().split("/")
        if not pt_text.isdigit() or len(enc_parts) < 2 or not enc_parts[1].isdigit():
            raise SdpError(f"bad rtpmap {rest[:40]!r}")
        channels = int(enc_parts[2]) if len(enc_parts) > 2 and enc_parts[2].isdigit() else 1
        media.rtpmap[int(pt_text)] = (enc_parts[0], int(enc_parts[1]), channels)
    elif name == "fmtp":
        pt_text, _, params = rest.partition(" ")
        if pt_text.isdigit():
            media.fmtp[int(pt_text)] = params.strip()
    elif name == "ptime" and rest.strip().isdigit():
        media.ptime = int(rest.strip())


@dataclass(frozen=True)
class MediaChoice:
    """What one side of the call negotiated: codec, payload types, address, direction."""

    codec: Codec
    payload_type: int
    dtmf_payload_type: int | None
    remote_address: str
    remote_port: int
    direction: str
    """Our direction: sendrecv, sendonly, recvonly or inactive."""
    ptime: int = 20

    @property
    def sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly") and not _is_null(self.remote_address)

    @property
    def receiving(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


def _is_null(address: str) -> bool:
    return address in ("0.0.0.0", "::")


def _codec_for(media: MediaLine, pt: int) -> Codec | None:
    entry = media.rtpmap.get(pt)
    if entry is None:
        return _STATIC.get(pt)
    name, clock, channels = entry
    for codec in (PCMU, PCMA, G722, OPUS):
        if name.lower() == codec.name.lower() and clock == codec.clock_rate:
            if codec is OPUS and channels not in (1, 2):
                return None
            return codec
    return None


def negotiate(offer: SessionDescription, *, prefer: Codec | None = None) -> MediaChoice:
    """Choose from an offer: the caller's first supported codec (or ``prefer`` when it
    is still offered, so a re-INVITE does not switch codecs needlessly)."""
    found = offer.audio()
    if found is None:
        raise SdpError("no audio stream in the offer")
    _, media = found
    if media.proto.upper() not in ("RTP/AVP", "RTP/AVPF"):
        raise SdpError(f"unsupported media profile {media.proto}")
    choices: list[tuple[int, Codec]] = []
    dtmf_pt = None
    for fmt in media.formats:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        entry = media.rtpmap.get(pt)
        if entry and entry[0].lower() == "telephone-event" and entry[1] == 8000:
            dtmf_pt = dtmf_pt if dtmf_pt is not None else pt
            continue
        codec = _codec_for(media, pt)
        if codec is not None:
            choices.append((pt, codec))
    if not choices:
        raise SdpError("no common codec")
    pt, codec = choices[0]
    if prefer is not None:
        for candidate in choices:
            if candidate[1] == prefer:
                pt, codec = candidate
                break
    address = media.connection or offer.connection
    if address is None:
        raise SdpError("no c= address")
    direction = media.direction or offer.direction
    ptime = media.ptime or 20
    if not MIN_PTIME <= ptime <= MAX_PTIME:
        raise SdpError(f"ptime {ptime} outside {MIN_PTIME}-{MAX_PTIME}")
    ours = "inactive" if direction == "inactive" else _REVERSE[direction]
    return MediaChoice(codec, pt, dtmf_pt, address, media.port, ours, ptime)


@dataclass
class LocalSession:
    """Our side's SDP identity: o= ids, version bumped on every new description."""

    address: str
    session_id: int
    version: int = 0

    def _header(self) -> list[str]:
        self.version += 1
        ip = "IP6" if ":" in self.address else "IP4"
        return [
            "v=0",
            f"o=omni-rtc {self.session_id} {self.version} IN {ip} {self.address}",
            "s=omni-rtc",
            f"c=IN {ip} {self.address}",
            "t=0 0",
        ]

    def answer(self, offer: SessionDescription, choice: MediaChoice, port: int) -> bytes:
        lines = self._header()
        found = offer.audio()
        audio_index = found[0] if found else -1
        for index, media in enumerate(offer.media):
            if index != audio_index:
                lines.append(f"m={media.media} 0 {media.proto} {' '.join(media.formats)}")
                continue
            pts = [choice.payload_type]
            if choice.dtmf_payload_type is not None:
                pts.append(choice.dtmf_payload_type)
            lines.append(f"m=audio {port} RTP/AVP {' '.join(map(str, pts))}")
            lines += _codec_lines(choice.codec, choice.payload_type)
            if choice.dtmf_payload_type is not None:
                lines += _dtmf_lines(choice.dtmf_payload_type)
            lines += ["a=ptime:20", f"a={choice.direction}"]
        return ("\r\n".join(lines) + "\r\n").encode()

    def offer(self, port: int, direction: str = "sendrecv") -> bytes:
        lines = self._header()
        pts = [_offer_pt(c) for c in SUPPORTED]
        lines.append(f"m=audio {port} RTP/AVP {' '.join(map(str, [*pts, TELEPHONE_EVENT_PT]))}")
        for codec, pt in zip(SUPPORTED, pts, strict=True):
            lines += _codec_lines(codec, pt)
        lines += _dtmf_lines(TELEPHONE_EVENT_PT)
        lines += ["a=ptime:20", f"a={direction}"]
        return ("\r\n".join(lines) + "\r\n").encode()


def _offer_pt(codec: Codec) -> int:
    return codec.static_pt if codec.static_pt is not None else OPUS_PT


def _codec_lines(codec: Codec, pt: int) -> list[str]:
    channels = f"/{codec.channels}" if codec.channels > 1 else ""
    lines = [f"a=rtpmap:{pt} {codec.name}/{codec.clock_rate}{channels}"]
    if codec.fmtp:
        lines.append(f"a=fmtp:{pt} {codec.fmtp}")
    return lines


def _dtmf_lines(pt: int) -> list[str]:
    return [f"a=rtpmap:{pt} telephone-event/8000", f"a=fmtp:{pt} 0-16"]

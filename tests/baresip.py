"""baresip (Debian baresip-core) as a real SIP caller: dials with a wav file as its
microphone (aufile) and records what it sends and hears (sndfile)."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.helpers import decode_wav_mono
from tests.media import envelope
from tests.sip_support import CLIENT_IP, SERVER_IP, SIP_PORT, require

CODECS = {"PCMU": ("g711.so", 8000), "PCMA": ("g711.so", 8000), "G722": ("g722.so", 16000)}
CODECS["opus"] = ("opus.so", 48000)


def speech_at(source_48k: Path, rate: int, directory: Path, channels: int = 1) -> Path:
    """baresip's aufile wants the codec's own sample rate and channel count (Opus: 2)."""
    out = directory / f"speech{rate}x{channels}.wav"
    if not out.exists():
        cmd = ["sox", str(source_48k), "-r", str(rate), "-c", str(channels), str(out)]
        subprocess.run(cmd, check=True)
    return out


@dataclass
class BaresipRun:
    returncode: int
    log: str
    sent: tuple[np.ndarray, int] | None
    heard: tuple[np.ndarray, int] | None


async def call_with_baresip(
    tmp: Path,
    wav: Path,
    codec: str,
    *,
    target: str = f"sip:bot@{SERVER_IP}:{SIP_PORT}",
    seconds: int = 10,
    extra_account: str = "",
    aor: str = f"sip:caller@{CLIENT_IP}:5070",
    regint: int = 0,
    listen_port: int = 5070,
) -> BaresipRun:
    require("baresip")
    module, _ = CODECS[codec]
    conf = tmp / "baresip"
    out = tmp / "recordings"
    conf.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    (conf / "config").write_text(
        "\n".join(
            [
                f"sip_listen {CLIENT_IP}:{listen_port}",
                f"audio_source aufile,{wav}",
                f"audio_player aufile,{out / 'player.wav'}",
                "module_path /usr/lib/baresip/modules",
                f"module {module}",
                "module aufile.so",
                "module sndfile.so",
                "module_app account.so",
                "module_app menu.so",
                f"snd_path {out}",
                "",
            ]
        )
    )
    (conf / "accounts").write_text(f"<{aor}>;regint={regint};audio_codecs={codec}{extra_account}\n")
    proc = await asyncio.create_subprocess_exec(
        "baresip", "-f", str(conf), "-e", f"/dial {target}", "-t", str(seconds),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    log, _ = await asyncio.wait_for(proc.communicate(), seconds + 15)
    assert proc.returncode is not None
    sent = sorted(out.glob("dump-*-enc.wav"))
    heard = sorted(out.glob("dump-*-dec.wav"))
    return BaresipRun(
        proc.returncode,
        log.decode(errors="replace"),
        decode_wav_mono(sent[-1].read_bytes()) if sent else None,
        decode_wav_mono(heard[-1].read_bytes()) if heard else None,
    )


def delayed_correlation(reference: np.ndarray, received: np.ndarray, max_lag: int) -> float:
    """Pearson r of 20 ms envelopes with ``received`` delayed by the best lag (frames)."""
    best = -1.0
    for lag in range(max_lag):
        n = min(len(reference), len(received) - lag)
        if n < len(reference) * 0.7:
            break
        window = received[lag : lag + n]
        if not window.std():  # silence at this lag: no correlation to speak of
            continue
        r = float(np.corrcoef(reference[:n], window)[0, 1])
        best = max(best, r)
    return best


def pcm_envelope(samples: np.ndarray, rate: int) -> np.ndarray:
    return envelope(samples.astype("<i2").tobytes(), rate)

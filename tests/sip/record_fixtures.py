"""Record the SIP requests real clients send, as unit-test fixtures (run once, commit).

    unshare --net bash -c 'ip link set lo up && exec "$@"' _ \
        .venv/bin/python -m tests.sip.record_fixtures

baresip dials (INVITE/ACK/BYE) and registers (REGISTER, answered 405 by us); sipp sends
OPTIONS, an INVITE it CANCELs, and a call it BYEs.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from pathlib import Path

from omni_rtc.sip.demo import EchoHandler
from tests.baresip import call_with_baresip, speech_at
from tests.media import make_speech_wav
from tests.sip_support import CLIENT_IP, FIXTURES, SERVER_IP, Tap, run_sipp, sip_server


def save(tap: Tap, client: str, methods: list[str]) -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for method in methods:
        found = tap.requests(method)
        if not found:
            raise SystemExit(f"{client} sent no {method}")
        path = FIXTURES / f"{client}-{method.lower()}.sip"
        path.write_bytes(found[0])
        print("wrote", path.relative_to(FIXTURES.parent.parent.parent))


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        speech = speech_at(make_speech_wav(tmp), 8000, tmp)
        async with sip_server(EchoHandler(hangup_after_s=None)) as (_, tap):
            await call_with_baresip(tmp, speech, "PCMU")
            save(tap, "baresip", ["INVITE", "ACK", "BYE"])
        async with sip_server(EchoHandler()) as (_, tap):
            await call_with_baresip(
                tmp, speech, "PCMU", target=f"sip:bot@{SERVER_IP}", seconds=3,
                aor=f"sip:caller@{SERVER_IP}", regint=60,
            )  # fmt: skip
            save(tap, "baresip", ["REGISTER"])
        async with sip_server(EchoHandler(), ring_s=1.5) as (_, tap):
            for scenario in ("options", "cancel", "basic"):
                (tmp / scenario).mkdir()
                await run_sipp(scenario, tmp / scenario)
            save(tap, "sipp", ["OPTIONS", "INVITE", "CANCEL", "ACK", "BYE"])
    subprocess.run(["ls", "-l", str(FIXTURES)], check=False)
    assert CLIENT_IP


if __name__ == "__main__":
    asyncio.run(main())

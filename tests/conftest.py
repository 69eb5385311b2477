from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from omni_rtc.config import Settings
from omni_rtc.emulator import Emulator, EmulatorConfig
from omni_rtc.ice import restrict_host_addresses
from signaling.app import MANAGER, METRICS, create_app
from signaling.server import make_runner

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session", autouse=True)
def loopback_only() -> Iterator[None]:
    """Every peer in the tests gathers only 127.0.0.1 (aioice skips loopback by default)."""
    restrict_host_addresses(["127.0.0.1"])
    yield
    restrict_host_addresses([])


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.media import make_speech_wav

    return make_speech_wav(tmp_path_factory.mktemp("media"))


@dataclass
class Bridge:
    url: str
    app: web.Application
    emulator: Emulator

    @property
    def manager(self):  # type: ignore[no-untyped-def]
        return self.app[MANAGER]

    @property
    def metrics(self):  # type: ignore[no-untyped-def]
        return self.app[METRICS]


@contextlib.asynccontextmanager
async def run_bridge(
    argv: list[str] | None = None,
    emulator: EmulatorConfig | None = None,
    upstream_url: str | None = None,
    static: dict[str, Path] | None = None,
) -> AsyncIterator[Bridge]:
    """The bridge on 127.0.0.1 with an emulator; ``static`` serves test pages (prefix: dir).

    The overload guard is off unless ``argv`` turns it on: this loop also runs the test's
    callers and emulator, whose work it would count as the server's.
    """
    settings = Settings.from_argv(
        ["--port", "0", "--ice-host-address", "127.0.0.1", "--max-loop-busy", "0", *(argv or [])],
        environ={},
    )
    async with Emulator(emulator or EmulatorConfig(reply_delay_s=0.05)) as emu:
        app = create_app(settings, upstream_url or emu.url)
        for prefix, directory in (static or {}).items():
            app.router.add_static(prefix, directory)
        runner = make_runner(app, http_timeout=settings.http_timeout)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield Bridge(f"http://127.0.0.1:{port}", app, emu)
        finally:
            await runner.cleanup()


def have(tool: str) -> bool:
    return shutil.which(tool) is not None

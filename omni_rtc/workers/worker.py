"""One worker process: a Bridge whose calls' media flows straight to and from callers.

The front process owns the public HTTP port and the SIP listeners, and hands each call
to a worker over the worker's Unix socket (the same HTTP API, minus the page, plus the
SIP media calls of :mod:`.sip_split`); each worker has its own slice of the RTP ports.
Call ids start with the worker's index, so the front routes every later request about a
call to the worker that holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from typing import TYPE_CHECKING

from aiohttp import web

from ..bridge import Bridge
from ..config import Settings
from ..log import setup_logging

if TYPE_CHECKING:
    from signaling.main import Signals

log = logging.getLogger("omni_rtc.worker")

CALL_ID_SEPARATOR = "."
"""Not in the base64url alphabet of call ids, so ``3.xyz`` is unambiguous."""


def call_id_prefix(index: int) -> str:
    return f"{index}{CALL_ID_SEPARATOR}"


def worker_of(call_id: str) -> int | None:
    """The index of the worker that holds ``call_id``, or None if it names none."""
    head, sep, _ = call_id.partition(CALL_ID_SEPARATOR)
    return int(head) if sep and head.isdigit() and len(head) <= 4 else None


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs (pickled to it by the front)."""

    settings: Settings
    index: int
    count: int
    socket_path: str
    upstream_url: str | None
    log_secrets: tuple[str, ...] = ()


def worker_settings(spec: WorkerSpec) -> Settings:
    """The front rate-limits and serves the page; a worker keeps its share of RTP ports."""
    settings = spec.settings
    low, _, high = settings.rtp_ports.partition("-")
    span = (int(high) - int(low) + 1) // spec.count // 2 * 2
    first = int(low) + spec.index * span
    return dataclasses.replace(
        settings,
        workers=1,
        rate_limit="0",
        upstream_url=spec.upstream_url or settings.upstream_url,
        rtp_ports=f"{first}-{first + max(2, span) - 1}",
        sip_register=settings.sip_register if spec.index == 0 else None,
        # the front checks who may open a media stream (the signature is over the public
        # URL only it sees); nobody else can reach this worker's private socket
        twilio_auth_token=None,
        allow_unsigned_media_streams=True,
    )


def main(spec: WorkerSpec) -> None:
    """Process entry point (multiprocessing, spawn)."""
    setup_logging(spec.settings.log_level, secrets=spec.log_secrets, prefix=f"w{spec.index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front decides; Ctrl-C goes to it
    try:
        asyncio.run(serve_worker(spec))
    except Exception:
        log.exception("worker %d failed", spec.index)
        raise SystemExit(1) from None


async def serve_worker(spec: WorkerSpec) -> None:
    from signaling.app import build_app
    from signaling.main import Signals, run_calls_until_signalled
    from signaling.server import make_runner

    from ..sip.ports import PortPool
    from ..transports.sip import SipGateway
    from .sip_split import WorkerSipCalls

    settings = worker_settings(spec)
    bridge = Bridge(settings, call_id_prefix=call_id_prefix(spec.index))
    await bridge.start()
    app = build_app(bridge, page=False)
    sip_config = settings.sip_config()
    if sip_config is not None:  # the front runs SIP signaling; calls' media lives here
        gateway = SipGateway(bridge)
        ports = PortPool(*sip_config.rtp_ports)
        WorkerSipCalls(gateway, ports, sip_config.idle_audio).routes(app)
    runner = make_runner(
        app,
        http_timeout=settings.http_timeout,
        handle_signals=False,
        access_log=None,  # the front logs the public requests; these are internal
    )
    await runner.setup()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(spec.socket_path)
    await web.UnixSite(runner, spec.socket_path).start()
    os.chmod(spec.socket_path, 0o600)
    signals = Signals()
    signals.install(signal.SIGTERM)  # first: drain; the front sends SIGUSR1 to hurry
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, signals.hurry.set)
    log.info("worker %d ready (pid %d, RTP %s)", spec.index, os.getpid(), settings.rtp_ports)
    orphan = asyncio.create_task(_end_with_the_front(signals), name="omni-rtc-front-watch")
    try:
        await run_calls_until_signalled(bridge, runner, None, signals)
    finally:
        orphan.cancel()


async def _end_with_the_front(signals: Signals) -> None:
    """A worker whose front died ends its calls at once: nobody could reach them."""
    front = os.getppid()
    while os.getppid() == front:  # noqa: ASYNC110 (nothing to wait on: poll)
        await asyncio.sleep(0.5)
    log.error("the front process is gone: ending every call now")
    signals.stop.set()
    signals.hurry.set()

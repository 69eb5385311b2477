"""The SIP flags for ``python -m omni_rtc.sip`` (the demo), taken from the main option
table so the flags, environment variables and checks are the ones ``omni-rtc serve`` has."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from omni_rtc.config import OPTIONS, Settings, add_serve_arguments
from omni_rtc.sip.server import SipConfig

SIP_FLAGS = (
    "--sip-listen",
    "--sip-allow",
    "--sip-user",
    "--sip-password",
    "--rtp-ports",
    "--sip-public-address",
    "--sip-register",
)


def add_sip_arguments(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    add_serve_arguments(parser, environ, options=[o for o in OPTIONS if o.flag in SIP_FLAGS])


def sip_config(args: argparse.Namespace) -> SipConfig:
    """Validated SipConfig; ValueError with a message for the operator otherwise."""
    settings = Settings(
        sip_listen=tuple(args.sip_listen or ()),
        sip_allow=tuple(args.sip_allow or ()),
        sip_user=args.sip_user,
        sip_password=args.sip_password,
        rtp_ports=args.rtp_ports,
        sip_public_address=args.sip_public_address,
        sip_register=args.sip_register,
    )
    config = settings.sip_config()
    if config is None:
        raise ValueError("give at least one --sip-listen udp:HOST:PORT or tcp:HOST:PORT")
    return config


def parse_sip_argv(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> SipConfig:
    parser = argparse.ArgumentParser(prog="python -m omni_rtc.sip")
    add_sip_arguments(parser, {} if environ is None else environ)
    return sip_config(parser.parse_args(list(argv)))

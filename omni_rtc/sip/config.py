"""Command-line flags of the SIP endpoint (the issue's interface), shared by
``python -m omni_rtc.sip`` and, later, ``omni-rtc serve``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

from omni_rtc.sip.auth import OPEN_PORT_WARNING
from omni_rtc.sip.ports import parse_port_range
from omni_rtc.sip.register import RegisterTarget
from omni_rtc.sip.server import SipConfig
from omni_rtc.sip.transport import ListenAddress

ENV = {
    "sip_listen": "OMNI_RTC_SIP_LISTEN",
    "sip_allow": "OMNI_RTC_SIP_ALLOW",
    "sip_user": "OMNI_RTC_SIP_USER",
    "sip_password": "OMNI_RTC_SIP_PASSWORD",
    "rtp_ports": "OMNI_RTC_RTP_PORTS",
    "sip_public_address": "OMNI_RTC_SIP_PUBLIC_ADDRESS",
    "sip_register": "OMNI_RTC_SIP_REGISTER",
}


def add_sip_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("SIP telephony")
    g.add_argument(
        "--sip-listen",
        action="append",
        default=[],
        metavar="udp|tcp:HOST:PORT",
        help=f"SIP listener, repeatable (env {ENV['sip_listen']}, comma-separated)",
    )
    g.add_argument(
        "--sip-allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="sources allowed to call without credentials, repeatable",
    )
    g.add_argument("--sip-user", help="digest user required from every other source")
    g.add_argument("--sip-password", help="digest password for --sip-user")
    g.add_argument(
        "--rtp-ports",
        default="40000-40999",
        metavar="LOW-HIGH",
        help="UDP ports for RTP media (default 40000-40999)",
    )
    g.add_argument(
        "--sip-public-address",
        metavar="ADDR",
        help="address written in Contact and SDP (behind NAT)",
    )
    g.add_argument("--sip-register", metavar="sip:USER:PASSWORD@REGISTRAR[:PORT]",
                   help="register at a PBX or trunk and keep the registration alive")  # fmt: skip


def apply_env(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    for attr, var in ENV.items():
        value = environ.get(var)
        current = getattr(args, attr)
        if not value or (current and current != "40000-40999"):
            continue
        if isinstance(current, list):
            setattr(args, attr, [v.strip() for v in value.split(",") if v.strip()])
        else:
            setattr(args, attr, value)


def sip_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> SipConfig:
    """Validated SipConfig; ValueError with a message for the operator otherwise."""
    apply_env(args, os.environ if environ is None else environ)
    listen = [ListenAddress.parse(text) for text in args.sip_listen]
    if not args.sip_allow and not (args.sip_user and args.sip_password):
        raise ValueError(OPEN_PORT_WARNING)
    return SipConfig(
        listen=listen,
        allow=list(args.sip_allow),
        user=args.sip_user,
        password=args.sip_password,
        rtp_ports=parse_port_range(args.rtp_ports),
        public_address=args.sip_public_address,
        register=RegisterTarget.parse(args.sip_register) if args.sip_register else None,
    )


def parse_sip_argv(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> SipConfig:
    parser = argparse.ArgumentParser(prog="omni-rtc-sip")
    add_sip_arguments(parser)
    return sip_config(parser.parse_args(list(argv)), environ)

"""The SIP flags of the issue: parsing, environment, and the refusal to run open."""

from __future__ import annotations

import subprocess
import sys

import pytest

from omni_rtc.sip.config import parse_sip_argv
from omni_rtc.sip.transport import ListenAddress


def test_flags_parse() -> None:
    config = parse_sip_argv(
        [
            "--sip-listen", "udp:0.0.0.0:5060", "--sip-listen", "tcp:[::1]:5070",
            "--sip-allow", "192.0.2.0/24", "--rtp-ports", "30000-30099",
            "--sip-public-address", "203.0.113.7", "--sip-register", "sip:1001:pw@pbx.example:5080",
        ],
        environ={},
    )  # fmt: skip
    assert config.listen == [
        ListenAddress("UDP", "0.0.0.0", 5060),
        ListenAddress("TCP", "::1", 5070),
    ]
    assert config.rtp_ports == (30000, 30099)
    assert config.public_address == "203.0.113.7"
    assert config.register is not None
    assert (config.register.user, config.register.host, config.register.port) == (
        "1001", "pbx.example", 5080,
    )  # fmt: skip


def test_environment_fills_missing_flags() -> None:
    config = parse_sip_argv(
        [],
        environ={
            "OMNI_RTC_SIP_LISTEN": "udp:127.0.0.1:5060,tcp:127.0.0.1:5060",
            "OMNI_RTC_SIP_USER": "alice",
            "OMNI_RTC_SIP_PASSWORD": "pw",
            "OMNI_RTC_RTP_PORTS": "20000-20010",
        },
    )
    assert [a.transport for a in config.listen] == ["UDP", "TCP"]
    assert (config.user, config.password, config.rtp_ports) == ("alice", "pw", (20000, 20010))


@pytest.mark.parametrize(
    "argv",
    [
        ["--sip-listen", "udp:0.0.0.0:5060"],
        ["--sip-listen", "udp:0.0.0.0:5060", "--sip-user", "alice"],
    ],
)
def test_refuses_an_open_sip_port(argv: list[str]) -> None:
    with pytest.raises(ValueError, match="abused"):
        parse_sip_argv(argv, environ={})


def test_standalone_server_explains_why_it_refuses() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "omni_rtc.sip", "--sip-listen", "udp:127.0.0.1:5060"],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "scanners" in result.stderr
    assert "--sip-allow" in result.stderr


@pytest.mark.parametrize("bad", ["udp:5060", "sctp:0.0.0.0:5060", "udp:host:port"])
def test_bad_listen_addresses(bad: str) -> None:
    with pytest.raises(ValueError, match="sip-listen"):
        ListenAddress.parse(bad)

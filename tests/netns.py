"""Tests that start servers such as coturn run only in a loopback-only network namespace."""

from __future__ import annotations

import os
import socket

import pytest


def in_loopback_only_namespace() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def require_loopback_namespace() -> None:
    if (
        not in_loopback_only_namespace()
        and os.environ.get("OMNI_RTC_BROWSER_ON_HOST_NETWORK") != "1"
    ):
        pytest.fail(
            "this test must run in a loopback-only network namespace: use tests/run, or "
            "unshare -rn sh -c 'ip link set lo up && pytest ...'"
        )

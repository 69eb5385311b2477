"""Value types of the command line: each raises argparse's own error with a message a
person can act on (no internal function names), and the helpers Settings checks with."""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
from pathlib import Path
from urllib.parse import urlsplit

TURN_DETECTION_MODES = ("server_vad", "manual")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MIN_TOKEN_CHARS = 16


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
    return value


def positive_number(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_number(text: str) -> float:
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"must be 1 or 0 (true or false), got {text!r}")


def public_url_value(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(
            f"must look like https://HOST[:PORT][/PREFIX], got {text!r}"
        )
    return text.strip().rstrip("/")


_RATE = re.compile(r"(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)s?")
_RATE_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


DEFAULT_RATE_LIMIT = "20/min"


def parse_rate(text: str) -> tuple[int, float] | None:
    """``"10/min"`` -> (10, 60.0); ``"0"`` -> None (no limit)."""
    text = text.strip().lower()
    if text in ("0", "off"):
        return None
    match = _RATE.fullmatch(text)
    if not match or int(match[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"must look like 20/min (per s, min or hour) or 0 for no limit, got {text!r}"
        )
    return int(match[1]), _RATE_PERIODS[match[2][0]]


def rate_value(text: str) -> str:
    parse_rate(text)
    return text.strip()


def cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an IP address or network such as 10.0.0.0/8, got {text!r}"
        ) from None


_ORIGIN = re.compile(r"https?://(?:\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::\d{1,5})?")


def web_origin(text: str) -> str:
    origin = text.strip().rstrip("/").lower()
    if origin != "*" and not _ORIGIN.fullmatch(origin):
        raise argparse.ArgumentTypeError(
            f"must be an origin such as https://app.example.org (scheme, host and optional "
            f"port, no path) or *, got {text!r}"
        )
    return origin


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (a name other than localhost: no)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_access_token(path: str) -> str:
    """The token in a file (e.g. a Docker secret), without surrounding whitespace."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --access-token-file {path}: {exc}") from None
    if not token:
        raise ValueError(f"--access-token-file {path} is empty")
    return token

"""Logging set-up that keeps secrets out of every log line."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Replaces known secrets and any ``Bearer <token>`` in the formatted message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _BEARER.sub(r"\1[redacted]", message)
        for secret in self.secrets:
            cleaned = cleaned.replace(secret, "[redacted]")
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_text is None and self.secrets:
            formatter = logging.Formatter()
            text = formatter.formatException(record.exc_info)
            for secret in self.secrets:
                text = text.replace(secret, "[redacted]")
            record.exc_text = _BEARER.sub(r"\1[redacted]", text)
        return True


def setup_logging(level: str = "INFO", secrets: Iterable[str] = (), prefix: str = "") -> None:
    """``prefix`` names the process (worker ``w1``) in every line."""
    handler = logging.StreamHandler()
    where = f"[{prefix}] " if prefix else ""
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)-7s {where}%(name)s: %(message)s")
    )
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiortc/aioice are chatty at INFO about every candidate pair.
    for noisy in ("aioice", "aiortc", "websockets"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

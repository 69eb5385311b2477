"""The option table as argparse arguments, with environment variables as defaults.

A bad environment variable is reported only when its flag is not given on the command
line, so a bad variable for ``serve`` does not break ``omni-rtc emulator`` or ``--help``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .options import OPTIONS, Option


@dataclass(frozen=True)
class InvalidEnv:
    """The default of a flag whose environment variable is invalid.

    Reported only when the flag is not given on the command line, so a bad variable for
    ``serve`` does not break ``omni-rtc emulator`` or ``--help``.
    """

    message: str


def _env_default(option: Option, environ: Mapping[str, str]) -> Any:
    raw = environ.get(option.env) if option.env else None
    if raw is None or raw == "":
        return [] if option.repeatable else option.default
    shown = "(hidden)" if option.secret else repr(raw)
    try:
        if option.repeatable:
            return [option.type(part.strip()) for part in raw.split(",") if part.strip()]
        value = option.type(raw)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        return InvalidEnv(f"environment variable {option.env}={shown} is invalid: {exc}")
    if option.choices and value not in option.choices:
        return InvalidEnv(
            f"environment variable {option.env}={shown} is invalid: choose from "
            + ", ".join(option.choices)
        )
    return value


class _Repeatable(argparse.Action):
    """A repeatable flag whose command-line values replace the environment's (flags win)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        items = [] if current is self.default or not isinstance(current, list) else current
        setattr(namespace, self.dest, [*items, values])


def add_serve_arguments(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str] | None = None,
    options: Sequence[Option] = OPTIONS,
) -> None:
    environ = os.environ if environ is None else environ
    for option in options:
        default = _env_default(option, environ)
        hidden = option.secret or option.switch or isinstance(default, InvalidEnv)
        shown = "" if hidden or default in (None, []) else f" (default: {default})"
        env = f" [env {option.env}]" if option.env else ""
        help_text = (option.help + shown + env).replace("%", "%%")  # argparse formats help
        if option.switch:
            parser.add_argument(
                option.flag, dest=option.dest, action="store_true", default=default, help=help_text
            )
            continue
        parser.add_argument(
            option.flag,
            dest=option.dest,
            type=option.type,
            choices=option.choices,
            default=default,
            action=_Repeatable if option.repeatable else "store",
            help=help_text,
        )


def check_env_defaults(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` for an invalid environment variable whose flag was not given."""
    for value in vars(args).values():
        if isinstance(value, InvalidEnv):
            raise ValueError(value.message)

import subprocess
import sys

import pytest

from omni_rtc.cli import build_parser, main
from omni_rtc.config import OPTIONS


def test_serve_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in OPTIONS:
        assert option.flag in text
        if option.env:
            assert option.env in text


@pytest.mark.parametrize("command", ["emulator", "healthcheck"])
def test_other_subcommands_have_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert command in capsys.readouterr().out


def test_bad_settings_exit_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--voice", "Nobody"])
    assert info.value.code == 2
    assert "unknown voice 'Nobody'" in capsys.readouterr().err


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "omni_rtc", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert result.stdout.startswith("omni-rtc ")


def test_parser_requires_a_command() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])

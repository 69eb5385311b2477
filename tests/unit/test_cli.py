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


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["serve", "--max-calls", "0"],
            "omni-rtc serve: error: argument --max-calls: must be a positive integer, got 0",
        ),
        (
            ["serve", "--port", "eighty"],
            "omni-rtc serve: error: argument --port: must be an integer, got 'eighty'",
        ),
        (
            ["serve", "--vad-threshold", "nan"],
            "omni-rtc serve: error: argument --vad-threshold: must be a number, got 'nan'",
        ),
        (
            ["serve", "--peer-timeout", "-1"],
            "omni-rtc serve: error: argument --peer-timeout: must be a positive number, got -1",
        ),
        (
            ["serve", "--rate-limit", "lots"],
            "omni-rtc serve: error: argument --rate-limit: must look like 20/min",
        ),
        (["serve", "--video-fps", "5"], "omni-rtc serve: error: --video-fps must be 0 (off)"),
        (
            ["emulator", "--port", "x"],
            "omni-rtc emulator: error: argument --port: must be an integer, got 'x'",
        ),
        (
            ["healthcheck", "--timeout", "0"],
            "omni-rtc healthcheck: error: argument --timeout: must be a positive number, got 0",
        ),
        (
            ["token", "--ttl", "soon", "--access-token", "0123456789abcdef"],
            "omni-rtc token: error: argument --ttl: must be a duration such as 90s, 10m",
        ),
    ],
)
def test_cli_errors_name_the_subcommand_and_flag_not_internal_names(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "_positive" not in err
    assert "_integer" not in err
    assert "invalid" not in err.split("error:", 1)[1]  # argparse's "invalid <func> value"


def test_refusing_a_public_host_says_why_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("OMNI_RTC_ACCESS_TOKEN", "OMNI_RTC_ACCESS_TOKEN_FILE", "OMNI_RTC_NO_AUTH"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SystemExit) as info:
        main(["serve", "--host", "0.0.0.0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("omni-rtc serve: error: refusing to listen on 0.0.0.0 without an")
    assert "--access-token" in err
    assert "--no-auth" in err


def test_token_command_prints_a_link_the_server_accepts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from signaling.tokens import verify

    secret = "0123456789abcdef-secret"
    monkeypatch.setenv("OMNI_RTC_ACCESS_TOKEN", secret)
    argv = ["token", "--ttl", "10m", "--voice", "Ethan", "--mode", "manual"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    claims = verify(secret, token)
    assert (claims.voice, claims.mode, claims.instructions) == ("Ethan", "manual", None)
    assert "valid until" in err
    assert main(["token", "--url", "https://call.example.org/?relay=1"]) == 0
    assert capsys.readouterr().out.startswith("https://call.example.org/?relay=1&token=v1.")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["token"], "no access token"),
        (["token", "--access-token", "tab\there"], "printable ASCII"),
        (["token", "--access-token", "0123456789abcdef", "--voice", "Nobody"], "unknown voice"),
        (
            ["token", "--access-token", "0123456789abcdef", "--mode", "walkie"],
            "argument --mode: invalid choice",
        ),
    ],
)
def test_token_command_errors(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("OMNI_RTC_ACCESS_TOKEN", "OMNI_RTC_ACCESS_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("omni-rtc token: error: ") or "\nomni-rtc token: error: " in err
    assert message in err

import base64
import hashlib
import hmac

import pytest

from omni_rtc import config as config_module
from omni_rtc.config import ENV_VARS, OPTIONS, Settings, parse_ice_server
from omni_rtc.ice import resolve_ice_servers, rtc_configuration, turn_rest_credentials


def test_defaults_use_the_emulator_and_no_ice_servers() -> None:
    settings = Settings.from_argv([], environ={})
    assert settings.use_emulator
    assert settings.base_url() is None
    assert settings.ice_servers == ()
    assert rtc_configuration(settings).iceServers == []  # never aiortc's implicit Google STUN
    assert settings.session_config().voice == "Chelsie"


def test_env_vars_and_flags() -> None:
    env = {
        "DASHSCOPE_API_KEY": "sk-abc",
        "OMNI_RTC_REGION": "singapore",
        "OMNI_RTC_TURN_DETECTION": "manual",
        "OMNI_RTC_ICE_SERVERS": (
            "stun:stun.example.org, turn:u:p@turn.example.org:3478?transport=tcp"
        ),
        "OMNI_RTC_ICE_HOST_ADDRESSES": "127.0.0.1",
        "OMNI_RTC_MAX_CALLS": "3",
    }
    settings = Settings.from_argv(["--voice", "Ethan"], environ=env)
    assert not settings.use_emulator
    assert settings.base_url() == "wss://dashscope-intl.aliyuncs.com/api-ws/v1/realtime"
    assert settings.session_config().manual
    assert settings.session_config(manual=False).turn_detection is not None
    assert [s.urls for s in settings.ice_servers] == [
        "stun:stun.example.org",
        "turn:turn.example.org:3478?transport=tcp",
    ]
    assert settings.ice_servers[1].username == "u"
    assert settings.ice_host_addresses == ("127.0.0.1",)
    assert settings.max_calls == 3
    assert "sk-abc" not in repr(settings)


def test_log_level_in_any_case_from_flag_or_env() -> None:
    assert Settings.from_argv(["--log-level", "debug"], environ={}).log_level == "DEBUG"
    env = {"OMNI_RTC_LOG_LEVEL": "warning"}
    assert Settings.from_argv([], environ=env).log_level == "WARNING"
    with pytest.raises(ValueError, match="OMNI_RTC_LOG_LEVEL"):
        Settings.from_argv([], environ={"OMNI_RTC_LOG_LEVEL": "loud"})


def test_openai_provider_reads_its_own_key() -> None:
    settings = Settings.from_argv(["--provider", "openai"], environ={"OPENAI_API_KEY": "sk-oa"})
    assert settings.api_key == "sk-oa"
    assert settings.profile.input_rate == 24_000


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--voice", "Nobody"], {}, "unknown voice"),
        (["--video-fps", "5"], {}, "--video-fps"),
        (["--chunk-ms", "200"], {}, "--chunk-ms"),
        (["--cert-file", "/nope.pem"], {}, "go together"),
        (["--cert-file", "/nope.pem", "--key-file", "/nope.key"], {}, "TLS file not found"),
        (["--ice-host-address", "eth0"], {}, "IP address"),
        (["--ice-transport-policy", "relay"], {}, "needs a turn"),
        (["--turn-secret", "short"], {}, "at least 16"),
        (["--ice-server", "turn:turn.example.org"], {}, "no credentials"),
        (["--region", "mars"], {}, "unknown region"),
        (["--vad-threshold", "3"], {}, "threshold"),
        ([], {"OMNI_RTC_PORT": "eighty"}, "OMNI_RTC_PORT"),
        (["--jpeg-max-size", "big"], {}, "1280x720"),
    ],
)
def test_invalid_settings_have_clear_errors(argv, env, message) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_argv(argv, environ=env)


@pytest.mark.parametrize(
    "text",
    ["http://x", "turn:", "stun:host?transport=udp", "turn:a b", "stun:u:p@host"],
)
def test_bad_ice_urls(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid ICE server|stun: servers"):
        parse_ice_server(text)


def test_turn_rest_credentials_match_coturn_scheme() -> None:
    username, credential = turn_rest_credentials("s3cret-s3cret-s3cret", 600, "alice", now=1000)
    assert username == "1600:alice"
    expected = base64.b64encode(
        hmac.new(b"s3cret-s3cret-s3cret", b"1600:alice", hashlib.sha1).digest()
    ).decode()
    assert credential == expected


@pytest.mark.skipif(
    not config_module.aiortc_has_relay_policy(), reason="aiortc 1.15 has no iceTransportPolicy"
)
def test_minted_credentials_for_browser_and_bridge() -> None:
    settings = Settings.from_argv(
        [
            "--ice-server",
            "turn:turn.example.org:3478",
            "--bridge-ice-server",
            "turn:coturn:3478",
            "--turn-secret",
            "0123456789abcdef0123",
            "--ice-transport-policy",
            "relay",
        ],
        environ={},
    )
    browser = resolve_ice_servers(settings, "omni-rtc-browser")
    assert browser[0].urls == "turn:turn.example.org:3478"
    assert browser[0].username is not None
    assert browser[0].username.endswith(":omni-rtc-browser")
    config = rtc_configuration(settings)
    assert config.iceServers[0].urls == "turn:coturn:3478"
    assert config.iceTransportPolicy.value == "relay"


def test_relay_only_ice_is_refused_clearly_where_aiortc_cannot_do_it(monkeypatch) -> None:
    monkeypatch.setattr(config_module, "aiortc_has_relay_policy", lambda: False)
    argv = ["--bridge-ice-server", "turn:u:p@coturn:3478", "--ice-transport-policy", "relay"]
    with pytest.raises(ValueError, match=r"needs aiortc 1\.16 or later"):
        Settings.from_argv(argv, environ={})
    monkeypatch.undo()
    assert Settings.from_argv(["--ice-transport-policy", "all"], environ={})


def test_every_option_has_an_env_var_and_help() -> None:
    for option in OPTIONS:
        assert option.env in ENV_VARS
        assert option.help


def test_access_settings_from_flags_and_env(tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file-0123456789\n")
    env = {
        "OMNI_RTC_HOST": "0.0.0.0",
        "OMNI_RTC_ACCESS_TOKEN_FILE": str(token_file),
        "OMNI_RTC_RATE_LIMIT": "5/s",
        "OMNI_RTC_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7",
        "OMNI_RTC_ALLOWED_ORIGINS": "https://App.example.org/,http://localhost:3000",
        "OMNI_RTC_HTTP_TIMEOUT": "3",
    }
    settings = Settings.from_argv([], environ=env)
    assert settings.access_token == "from-a-file-0123456789"
    assert settings.auth_required
    assert settings.call_rate == (5, 1.0)
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.168.1.7/32")
    assert settings.allowed_origins == ("https://app.example.org", "http://localhost:3000")
    assert settings.http_timeout == 3.0
    assert "from-a-file" not in repr(settings)
    # repeatable flags replace the environment's list (flags win)
    flagged = Settings.from_argv(["--allowed-origin", "*"], environ=env)
    assert flagged.allowed_origins == ("*",)
    assert Settings.from_argv([], environ={}).call_rate == (20, 60.0)  # on by default
    assert Settings.from_argv(["--rate-limit", "0"], environ={}).call_rate is None


def test_a_non_loopback_host_needs_a_token_or_an_explicit_no_auth() -> None:
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        with pytest.raises(ValueError, match=f"refusing to listen on {host} without an access"):
            Settings.from_argv(["--host", host], environ={})
        assert Settings.from_argv(["--host", host, "--no-auth"], environ={}).no_auth
        assert Settings.from_argv(["--host", host], environ={"OMNI_RTC_NO_AUTH": "1"}).no_auth
        token = ["--host", host, "--access-token", "0123456789abcdef"]
        assert Settings.from_argv(token, environ={}).auth_required
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        assert not Settings.from_argv(["--host", host], environ={}).auth_required


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--access-token", "tab\tinside-0123456789"], {}, "printable ASCII"),
        (["--access-token", "has spaces in it 0123"], {}, "printable ASCII"),
        (["--access-token", "0123456789abcdef", "--no-auth"], {}, "contradict"),
        (["--access-token-file", "/nonexistent/token"], {}, "cannot read --access-token-file"),
        (
            ["--access-token", "0123456789abcdef"],
            {"OMNI_RTC_ACCESS_TOKEN_FILE": "/x"},
            "not both",
        ),
        ([], {"OMNI_RTC_NO_AUTH": "maybe"}, "OMNI_RTC_NO_AUTH='maybe' is invalid"),
        ([], {"OMNI_RTC_RATE_LIMIT": "lots"}, "OMNI_RTC_RATE_LIMIT"),
        ([], {"OMNI_RTC_ACCESS_TOKEN": "caf\u00e9-0123456789abcdef"}, "printable ASCII"),
        ([], {"OMNI_RTC_TRUSTED_PROXIES": "caddy"}, "OMNI_RTC_TRUSTED_PROXIES"),
        ([], {"OMNI_RTC_ALLOWED_ORIGINS": "https://x.org/path"}, "OMNI_RTC_ALLOWED_ORIGINS"),
    ],
)
def test_invalid_access_settings(argv, env, message) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_argv(argv, environ=env)


def test_an_invalid_env_var_does_not_matter_when_its_flag_is_given() -> None:
    env = {"OMNI_RTC_PORT": "eighty", "OMNI_RTC_ALLOWED_ORIGINS": "nope"}
    settings = Settings.from_argv(
        ["--port", "81", "--allowed-origin", "https://a.example.org"], environ=env
    )
    assert settings.port == 81
    assert settings.allowed_origins == ("https://a.example.org",)


def test_secret_env_values_are_not_echoed_in_errors() -> None:
    with pytest.raises(ValueError, match="printable ASCII") as info:
        Settings.from_argv([], environ={"OMNI_RTC_ACCESS_TOKEN": "sk-s\u00e9cret"})
    assert "cret" not in str(info.value)


def test_a_short_token_works_but_is_flagged_as_weak() -> None:
    short = Settings.from_argv(["--access-token", "s3cret"], environ={})
    assert short.auth_required
    assert short.weak_access_token
    assert not Settings.from_argv(["--access-token", "x" * 16], environ={}).weak_access_token

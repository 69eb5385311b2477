"""Call links: signed claims, expiry, tampering, and what a grant binds."""

import base64
import json

import pytest

from omni_rtc.calls import CallOptions
from signaling.auth import FULL_ACCESS, Gatekeeper, Grant
from signaling.tokens import CallClaims, InvalidToken, mint, verify

SECRET = "0123456789abcdef-access"
NOW = 1_800_000_000.0


def test_a_minted_link_verifies_with_its_claims_until_it_expires() -> None:
    token = mint(SECRET, 600, voice="Ethan", mode="manual", instructions="Be brief.", now=NOW)
    assert token.startswith("v1.")
    claims = verify(SECRET, token, now=NOW + 599)
    assert claims == CallClaims(int(NOW) + 600, "Ethan", "Be brief.", "manual")
    with pytest.raises(InvalidToken, match="expired"):
        verify(SECRET, token, now=NOW + 600)


def test_claims_are_optional() -> None:
    assert verify(SECRET, mint(SECRET, 60, now=NOW), now=NOW) == CallClaims(int(NOW) + 60)


def _reencode(token: str, **changes: object) -> str:
    version, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{version}.{forged}.{signature}"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: _reencode(t, exp=int(NOW) + 10**6),  # a longer life
        lambda t: _reencode(t, voice="Cherry"),  # another voice
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # the signature
        lambda t: "v2" + t[2:],  # the version
        lambda t: t + ".x",
        lambda t: t.replace(".", "", 1),
        lambda t: t[:-1] + "é",  # not ASCII
        lambda t: "v1." + "A" * 9000 + ".x",  # too long
        lambda t: "",
    ],
)
def test_tampered_links_are_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    token = mint(SECRET, 600, voice="Ethan", now=NOW)
    with pytest.raises(InvalidToken, match="not a valid"):
        verify(SECRET, tamper(token), now=NOW)


def test_a_link_signed_with_another_token_is_refused_and_expiry_is_checked_after_it() -> None:
    other = mint("another-secret-0123456789", 600, now=NOW - 10_000)  # expired and foreign
    with pytest.raises(InvalidToken, match="not a valid"):
        verify(SECRET, other, now=NOW)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "walkie-talkie"}, "mode"),
        ({"voice": "x" * 65}, "voice"),
        ({"instructions": "x" * 4001}, "instructions"),
    ],
)
def test_unusable_claims_cannot_be_minted(kwargs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        mint(SECRET, 60, **kwargs)
    with pytest.raises(ValueError, match="positive"):
        mint(SECRET, 0)


def test_the_gatekeeper_accepts_the_token_or_a_link_as_bearer() -> None:
    gate = Gatekeeper(SECRET)
    assert gate.check(f"Bearer {SECRET}") is FULL_ACCESS
    assert gate.check(f"bearer   {SECRET} ") is FULL_ACCESS
    link = mint(SECRET, 600, voice="Ethan")
    assert gate.check(f"Bearer {link}").claims is not None
    for header in (None, "", "Bearer", f"Basic {SECRET}", f"Bearer {SECRET}x", SECRET):
        with pytest.raises(InvalidToken):
            gate.check(header)
    assert Gatekeeper(None).check(None) is FULL_ACCESS  # auth off


def test_a_link_binds_what_it_names_and_leaves_the_rest_to_the_caller() -> None:
    grant = Grant(CallClaims(0, voice="Ethan", mode="manual"))
    asked = CallOptions(voice="Chelsie", instructions="Be brief.", mode="server_vad")
    assert grant.bind(asked) == CallOptions(voice="Ethan", instructions="Be brief.", mode="manual")
    assert FULL_ACCESS.bind(asked) == asked

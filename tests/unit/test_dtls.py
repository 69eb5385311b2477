"""aiortc's DTLS must interoperate with RSA-certificate peers (GStreamer) and ECDSA ones.

The handshakes run in memory with pyOpenSSL on both sides: aiortc's real context on
one, an OpenSSL peer with an RSA or ECDSA certificate (as GStreamer's dtlsagent builds
it) on the other.
"""

from __future__ import annotations

import datetime
import logging

import pytest
from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80, RTCCertificate
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from omni_rtc import dtls


def aiortc_context(*, patched: bool = True) -> SSL.Context:
    assert dtls.allow_rsa_peers()
    factory = dtls.context_factory()
    assert factory is not None
    if not patched:
        factory = factory.__wrapped__  # type: ignore[attr-defined]
    return factory(RTCCertificate.generateCertificate(), [SRTP_AES128_CM_SHA1_80])


def peer_context(kind: str) -> SSL.Context:
    """An OpenSSL DTLS peer like GStreamer's: its own self-signed certificate, default suites."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gstreamer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    context = SSL.Context(SSL.DTLS_METHOD)
    context.use_certificate(cert)
    context.use_privatekey(key)
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
    context.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    return context


def handshake(client_ctx: SSL.Context, server_ctx: SSL.Context) -> str:
    """Run a DTLS handshake in memory; returns the negotiated suite."""
    client, server = SSL.Connection(client_ctx), SSL.Connection(server_ctx)
    client.set_connect_state()
    server.set_accept_state()
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, this, other in (("client", client, server), ("server", server, client)):
            try:
                this.do_handshake()
                done[name] = True
            except SSL.WantReadError:
                pass
            while True:
                try:
                    other.bio_write(this.bio_read(1500))
                except SSL.WantReadError:
                    break
        if all(done.values()):
            cipher = client.get_cipher_name()
            assert cipher == server.get_cipher_name()
            return str(cipher)
    raise AssertionError("handshake did not finish")


def test_aiortc_offers_both_suite_families() -> None:
    ciphers = dtls.offered_ciphers(aiortc_context())
    assert any(c.startswith("ECDHE-ECDSA-") for c in ciphers), ciphers
    assert any(c.startswith("ECDHE-RSA-") for c in ciphers), ciphers
    # every suite aiortc chose is still offered, with its RSA twin right after it
    original = dtls.offered_ciphers(aiortc_context(patched=False))
    assert [c for c in ciphers if c in original] == original
    assert ciphers == dtls.with_rsa_twins(original)


def test_aiortc_dtls_client_connects_to_an_rsa_peer() -> None:
    cipher = handshake(aiortc_context(), peer_context("rsa"))
    assert cipher.startswith("ECDHE-RSA-")


def test_unpatched_aiortc_fails_against_an_rsa_peer() -> None:
    """The defect itself: proves the handshake test above can fail."""
    with pytest.raises(SSL.Error, match="no shared cipher"):
        handshake(aiortc_context(patched=False), peer_context("rsa"))


@pytest.mark.parametrize("aiortc_is_client", [True, False])
def test_ecdsa_peers_and_the_server_role_still_work(aiortc_is_client: bool) -> None:
    ours, theirs = aiortc_context(), peer_context("ecdsa")
    cipher = handshake(ours, theirs) if aiortc_is_client else handshake(theirs, ours)
    assert cipher.startswith("ECDHE-ECDSA-")
    # as server with its ECDSA certificate, aiortc also accepts an RSA client
    assert handshake(peer_context("rsa"), aiortc_context()).startswith("ECDHE-ECDSA-")


def test_aiortc_internals_are_where_the_fix_expects_them() -> None:
    """Fails loudly when an aiortc upgrade moves or renames the context factory."""
    factory = dtls.context_factory()
    assert factory is not None, "aiortc.rtcdtlstransport.RTCCertificate._create_ssl_context"
    assert getattr(factory, "__wrapped__", factory).__qualname__ == (
        "RTCCertificate._create_ssl_context"
    )


def test_a_changed_aiortc_is_reported_not_fatal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(RTCCertificate, dtls.FACTORY_NAME)
    with caplog.at_level(logging.WARNING, "omni_rtc.dtls"):
        assert dtls.allow_rsa_peers() is False
    assert "no shared cipher" in caplog.text


def test_with_rsa_twins() -> None:
    assert dtls.with_rsa_twins(["ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "X"]) == [
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "X",
    ]

"""Callers whose DTLS certificate is RSA (like GStreamer's) reach the bridge on every path.

The bridge answers ``a=setup:actpass`` offers as DTLS client, so it must offer a suite
for the caller's RSA certificate. Here an aiortc caller is given an RSA certificate.
"""

from __future__ import annotations

import datetime

import pytest
from aiortc.rtcdtlstransport import RTCCertificate
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.conftest import Bridge, run_bridge
from tests.helpers import sine_pcm, wait_for
from tests.peer import LoopingPcmTrack, TestPeer
from tests.whip_peer import WhipPeer


def rsa_certificate() -> RTCCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa-caller")])
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
    return RTCCertificate(key=key, cert=cert)  # type: ignore[arg-type]


def bridge_cipher(bridge: Bridge) -> str:
    dtls = bridge.manager.list()[0].pc.getTransceivers()[0].receiver.transport
    assert dtls._role == "client"  # the case the fix is for
    return str(dtls._ssl.get_cipher_name())


@pytest.mark.parametrize("path", ["/offer", "/whip"])
async def test_rsa_certificate_caller_connects(path: str, monkeypatch) -> None:
    track = LoopingPcmTrack(sine_pcm(1.0, 48_000))
    async with run_bridge() as bridge:
        # aiortc has no API to choose a certificate: only the caller's pc gets an RSA one
        with monkeypatch.context() as patch:
            patch.setattr(RTCCertificate, "generateCertificate", rsa_certificate)
            peer: TestPeer | WhipPeer = (
                TestPeer(bridge.url, track)
                if path == "/offer"
                else WhipPeer(bridge.url + "/whip", track)
            )
        if isinstance(peer, TestPeer):
            await peer.call()
        else:
            assert (await peer.publish(await peer.offer())).status == 201
        try:
            await peer.wait_connected()
            cipher = bridge_cipher(bridge)
            await wait_for(lambda: len(bridge.emulator.sessions[0].audio) > 16_000, 10)
        finally:
            await peer.close()
    assert cipher.startswith("ECDHE-RSA-"), cipher

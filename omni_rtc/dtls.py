"""DTLS interop: let aiortc talk to peers whose certificate is RSA (GStreamer, many gateways).

aiortc builds each DTLS context in ``RTCCertificate._create_ssl_context`` with only
ECDHE-ECDSA cipher suites. That is enough while aiortc is the DTLS *server* (its own
certificate is ECDSA), but as the DTLS *client*, which is what aiortc becomes when it
answers an ``a=setup:actpass`` offer, it must offer a suite that matches the *peer's*
certificate. Against an RSA certificate (GStreamer webrtcbin's default, so every
GStreamer WHIP client) OpenSSL fails with "no shared cipher" after ICE connects.

:func:`allow_rsa_peers` wraps that factory once, process-wide: it asks aiortc for one
throwaway context to learn the suites it offers, then sets that list plus the ECDHE-RSA
twin of every ECDHE-ECDSA suite on each context aiortc builds (everything else in the
context stays aiortc's). Our own certificate stays ECDSA, so the suites we pick as DTLS
server are unchanged. The factory is private to aiortc: :func:`context_factory` is the
one guarded access to it, and ``tests/unit/test_dtls.py`` fails loudly when aiortc
changes it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80, RTCCertificate
from OpenSSL import SSL

log = logging.getLogger("omni_rtc.dtls")

FACTORY_NAME = "_create_ssl_context"
_MARK = "_omni_rtc_allows_rsa_peers"
ECDSA_PREFIX = "ECDHE-ECDSA-"
RSA_PREFIX = "ECDHE-RSA-"

ContextFactory = Callable[..., SSL.Context]


def context_factory() -> ContextFactory | None:
    """aiortc's DTLS context factory, or None when aiortc no longer has it."""
    factory = getattr(RTCCertificate, FACTORY_NAME, None)
    return factory if callable(factory) else None


def offered_ciphers(context: SSL.Context) -> list[str]:
    """The (D)TLS 1.2 suites a context offers, in order (TLS 1.3 suites left out)."""
    return [c for c in SSL.Connection(context).get_cipher_list() if not c.startswith("TLS_")]


def with_rsa_twins(ciphers: list[str]) -> list[str]:
    """Each ECDHE-ECDSA suite followed by its ECDHE-RSA twin (no duplicates, order kept)."""
    out: list[str] = []
    for cipher in ciphers:
        twins = [cipher]
        if cipher.startswith(ECDSA_PREFIX):
            twins.append(RSA_PREFIX + cipher[len(ECDSA_PREFIX) :])
        out.extend(c for c in twins if c not in out)
    return out


def allow_rsa_peers() -> bool:
    """Make every aiortc DTLS context offer ECDHE-RSA suites too (idempotent).

    Returns False (and logs why) when aiortc's internals changed so that this cannot be
    applied; the bridge then still works with ECDSA peers (browsers, aiortc).
    """
    factory = context_factory()
    if factory is None:
        log.warning(
            "aiortc has no RTCCertificate.%s any more: peers with RSA certificates "
            "(GStreamer WHIP clients) will fail with 'no shared cipher'",
            FACTORY_NAME,
        )
        return False
    if getattr(factory, _MARK, False):
        return True
    try:
        # pyOpenSSL forbids changing a context once a connection used it: probe a spare one
        probe = factory(RTCCertificate.generateCertificate(), [SRTP_AES128_CM_SHA1_80])
        ciphers = offered_ciphers(probe)
    except Exception as exc:  # a changed private signature must not stop the server
        log.warning("cannot read aiortc's DTLS suites (%r): RSA peers will fail", exc)
        return False
    wanted = with_rsa_twins(ciphers)
    if wanted == ciphers:
        return True  # aiortc offers them already
    cipher_list = ":".join(wanted).encode()

    @functools.wraps(factory)
    def create_ssl_context(self: RTCCertificate, *args: Any, **kwargs: Any) -> SSL.Context:
        context = factory(self, *args, **kwargs)
        context.set_cipher_list(cipher_list)
        return context

    setattr(create_ssl_context, _MARK, True)
    setattr(RTCCertificate, FACTORY_NAME, create_ssl_context)
    log.debug("DTLS suites: %s", cipher_list.decode())
    return True

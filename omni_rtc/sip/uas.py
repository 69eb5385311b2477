"""The sans-I/O SIP user agent server: bytes and time in, bytes and call events out.

Feed it with :meth:`UserAgent.receive` (one datagram or one framed stream message)
and :meth:`UserAgent.handle_timers`; collect what to send and what happened with
:meth:`UserAgent.drain`; answer offered calls with :meth:`accept` / :meth:`reject` and
end them with :meth:`hangup`.  No sockets, no clock, no asyncio.
"""

from __future__ import annotations

import logging

from omni_rtc.sip.auth import Authenticator, Verdict
from omni_rtc.sip.events import (  # re-exported: the user agent's vocabulary
    CallConfirmed,
    CallEnded,
    CallOffered,
    Event,
    MediaChanged,
    Output,
)
from omni_rtc.sip.headers import HeaderError
from omni_rtc.sip.invite import ALLOW, InviteSessions
from omni_rtc.sip.message import ParseError, Request, Response, can_answer, parse
from omni_rtc.sip.transaction import (
    ClientTransaction,
    Peer,
    ResponseCallback,
    Send,
    ServerTransaction,
    Timers,
    make_response,
    mark_via,
    new_tag,
    response_branch,
    response_peer,
    transaction_key,
)

log = logging.getLogger("omni_rtc.sip")

KNOWN_METHODS = {"REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER", "UPDATE"}
KNOWN_METHODS |= {"PRACK", "INFO"}


class UserAgent(InviteSessions):
    def __init__(
        self,
        auth: Authenticator,
        *,
        public_address: str | None = None,
        user_agent: str = "omni-rtc",
    ) -> None:
        self.auth = auth
        self.public_address = public_address
        self.user_agent = user_agent
        self.timers = Timers()
        self._out: list[Output] = []
        self._server_txs: dict[tuple[str, ...], ServerTransaction] = {}
        self._client_txs: dict[str, ClientTransaction] = {}
        super().__init__()

    # ------------------------------------------------------------------ public API

    def drain(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def handle_timers(self, now: float) -> None:
        self.timers.run(now)

    def idle(self) -> bool:
        """No dialog, no transaction: nothing left behind."""
        return not (self._dialogs or self._server_txs or self._client_txs)

    def busy_clients(self) -> bool:
        """A BYE or REGISTER still waits for its answer."""
        return bool(self._client_txs)

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        if not data.strip(b"\r\n \t\x00"):
            return  # keep-alive
        try:
            msg = parse(data, stream=peer.reliable)
        except ParseError as exc:
            self._malformed(exc, peer)
            return
        if isinstance(msg, Response):
            branch = response_branch(msg)
            tx = self._client_txs.get(branch or "")
            if tx is not None:
                tx.receive(msg, now)
            return
        mark_via(msg, peer)
        self._request(msg, peer, now)

    def send_request(
        self, request: Request, peer: Peer, on_final: ResponseCallback, now: float
    ) -> None:
        """Start a non-INVITE client transaction (BYE, REGISTER)."""
        branch = request.top_via().branch or ""
        tx = ClientTransaction(
            branch,
            request.serialize(),
            peer,
            self._send,
            self.timers,
            on_final,
            self._client_done,
        )
        self._client_txs[branch] = tx
        tx.start(now)

    # ------------------------------------------------------------------ internals

    def _send(self, data: bytes, peer: Peer) -> None:
        self._out.append(Send(data, peer))

    def _malformed(self, exc: ParseError, peer: Peer) -> None:
        req = exc.partial
        if req is None or req.method == "ACK" or not can_answer(req):
            log.debug("dropped unparseable message from %s: %s", peer.host, exc.reason)
            return
        try:
            mark_via(req, peer)
            dest = response_peer(req, peer)
        except (HeaderError, StopIteration):
            return
        response = make_response(req, 400, reason=f"Bad Request ({exc.reason[:60]})")
        self._send(response.serialize(), dest)
        log.info("400 to %s %s from %s: %s", req.method, req.call_id[:40], peer.host, exc.reason)

    def _request(self, req: Request, peer: Peer, now: float) -> None:
        key = transaction_key(req)
        if req.method == "ACK":
            self._ack(req, key, now)
            return
        existing = self._server_txs.get(key)
        if existing is not None:
            existing.retransmission()
            return
        tx = ServerTransaction(key, req, peer, self._send, self.timers, self._tx_done)
        self._server_txs[key] = tx
        if req.method == "CANCEL":
            self._cancel(req, tx, now)
            return
        if req.headers.get("Max-Forwards") == "0":
            tx.respond(make_response(req, 483), now)
            return
        to_tag = req.to().tag
        if to_tag:
            self._in_dialog(req, tx, to_tag, now)
            return
        if req.method not in ("INVITE", "OPTIONS", "ACK", "BYE", "CANCEL"):
            status = 405 if req.method in KNOWN_METHODS else 501
            tx.respond(make_response(req, status, headers=[("Allow", ALLOW)]), now)
            return
        if req.method == "BYE":
            tx.respond(make_response(req, 481), now)
            return
        unsupported = [r for r in req.headers.get_all("Require")]
        if unsupported and req.method == "INVITE":
            tx.respond(
                make_response(req, 420, headers=[("Unsupported", ", ".join(unsupported))]), now
            )
            return
        decision = self.auth.check(
            source=peer.host,
            method=req.method,
            authorization=req.headers.get("Authorization"),
            now=now,
        )
        if decision.verdict is not Verdict.ALLOWED:
            status = 401 if decision.verdict is Verdict.CHALLENGE else 403
            headers = [("WWW-Authenticate", c) for c in decision.challenges]
            # Stateless: an unverified (maybe spoofed) source gets one response per
            # request, never our retransmissions (no reflection amplification) and no
            # transaction state; a lost 401 is recovered by the client's retransmission.
            self._server_txs.pop(key, None)
            response = make_response(req, status, to_tag=new_tag(), headers=headers)
            self._send(response.serialize(), response_peer(req, peer))
            log.info("%d to %s from %s: %s", status, req.method, peer.host, decision.reason)
            return
        if req.method == "OPTIONS":
            tx.respond(self._options_ok(req), now)
            return
        self._new_invite(req, tx, peer, now)

    def _options_ok(self, req: Request, to_tag: str | None = None) -> Response:
        headers = [("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", "")]
        headers += [("Server", self.user_agent)]
        return make_response(req, 200, to_tag=to_tag or new_tag(), headers=headers)

    def _in_dialog(self, req: Request, tx: ServerTransaction, to_tag: str, now: float) -> None:
        dialog = self._by_tags.get((req.call_id, to_tag, req.from_().tag or ""))
        if dialog is None:
            tx.respond(make_response(req, 481), now)
            return
        cseq = req.cseq().number
        if cseq <= dialog.remote_cseq and req.method != "ACK":
            tx.respond(make_response(req, 500, reason="CSeq Out of Order"), now)
            return
        dialog.remote_cseq = cseq
        if req.method == "BYE":
            tx.respond(make_response(req, 200), now)
            self._end(dialog, "remote BYE")
        elif req.method == "OPTIONS":
            tx.respond(self._options_ok(req, to_tag), now)
        elif req.method == "INVITE":
            self._reinvite(dialog, req, tx, now)
        else:
            status = 405 if req.method in KNOWN_METHODS else 501
            tx.respond(make_response(req, status, headers=[("Allow", ALLOW)]), now)

    def _client_done(self, tx: ClientTransaction) -> None:
        self._client_txs.pop(tx.branch, None)

    def _tx_done(self, tx: ServerTransaction) -> None:
        self._server_txs.pop(tx.key, None)
        self._tx_dialog.pop(tx.key, None)


__all__ = [
    "ALLOW",
    "CallConfirmed",
    "CallEnded",
    "CallOffered",
    "Event",
    "MediaChanged",
    "Output",
    "UserAgent",
]

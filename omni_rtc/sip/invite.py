"""INVITE dialogs on the UAS side: offer/answer, 2xx until ACK, re-INVITE (hold, resume,
codec change), CANCEL, and our own BYE. Mixed into :class:`omni_rtc.sip.uas.UserAgent`."""

from __future__ import annotations

import contextlib
import logging
import secrets

from omni_rtc.sip.dialog import Dialog
from omni_rtc.sip.events import CallConfirmed, CallEnded, CallOffered, MediaChanged, Output
from omni_rtc.sip.headers import HeaderError, NameAddr
from omni_rtc.sip.message import Request, Response
from omni_rtc.sip.sdp import LocalSession, MediaChoice, SdpError, SessionDescription, negotiate
from omni_rtc.sip.transaction import (
    Peer,
    ResponseCallback,
    ServerTransaction,
    Timers,
    make_response,
    new_branch,
    new_tag,
    response_peer,
    transaction_key,
)

log = logging.getLogger("omni_rtc.sip")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"


class InviteSessions:
    """Call state: dialogs by our id, by tags, by the caller's identifiers."""

    public_address: str | None
    user_agent: str
    timers: Timers
    _out: list[Output]
    _server_txs: dict[tuple[str, ...], ServerTransaction]

    def __init__(self) -> None:
        self._dialogs: dict[str, Dialog] = {}
        self._by_tags: dict[tuple[str, str, str], Dialog] = {}
        self._by_remote: dict[tuple[str, str], Dialog] = {}
        self._tx_dialog: dict[tuple[str, ...], Dialog] = {}

    def _send(self, data: bytes, peer: Peer) -> None:
        raise NotImplementedError

    def send_request(
        self, request: Request, peer: Peer, on_final: ResponseCallback, now: float
    ) -> None:
        raise NotImplementedError

    @property
    def calls(self) -> list[str]:
        return list(self._dialogs)

    def dialog(self, call: str) -> Dialog | None:
        return self._dialogs.get(call)

    def accept(self, call: str, rtp_port: int, now: float) -> bool:
        """Answer 200 OK with our SDP on ``rtp_port``; False if the call is gone."""
        dialog = self._dialogs.get(call)
        if dialog is None or dialog.state != "offered" or dialog.invite_tx is None:
            return False
        dialog.rtp_port = rtp_port
        self._answer_invite(dialog, now)
        dialog.state = "answered"
        return True

    def ringing(self, call: str) -> None:
        dialog = self._dialogs.get(call)
        if dialog and dialog.state == "offered" and dialog.invite_tx:
            dialog.invite_tx.respond(
                make_response(dialog.invite, 180, to_tag=dialog.local_tag), 0.0
            )

    def reject(self, call: str, status: int, now: float, *, retry_after: int | None = None) -> None:
        dialog = self._dialogs.get(call)
        if dialog is None or dialog.state != "offered" or dialog.invite_tx is None:
            return
        extra = [("Retry-After", str(retry_after))] if retry_after else []
        response = make_response(dialog.invite, status, to_tag=dialog.local_tag, headers=extra)
        dialog.invite_tx.respond(response, now)
        self._forget(dialog)

    def hangup(self, call: str, reason: str, now: float) -> None:
        """End a call from our side: BYE (with its own retransmission) or 480 if unanswered."""
        dialog = self._dialogs.get(call)
        if dialog is None:
            return
        if dialog.state == "offered":
            if dialog.invite_tx is not None:
                response = make_response(dialog.invite, 480, to_tag=dialog.local_tag)
                dialog.invite_tx.respond(response, now)
        else:
            self._send_bye(dialog, now)
        self._end(dialog, reason)

    def _new_invite(self, req: Request, tx: ServerTransaction, peer: Peer, now: float) -> None:
        from_tag = req.from_().tag or ""
        if (req.call_id, from_tag) in self._by_remote:
            tx.respond(make_response(req, 482, reason="Loop Detected"), now)
            return
        offer, choice, failure = self._read_offer(req, None)
        if failure:
            status, reason = failure
            tx.respond(make_response(req, status, reason=reason, to_tag=new_tag()), now)
            log.info("%d to INVITE %s from %s: %s", status, req.call_id[:40], peer.host, reason)
            return
        contacts = req.headers.get_all("Contact")
        try:
            target = NameAddr.parse(contacts[0]).uri if contacts else req.from_().uri
        except HeaderError:
            tx.respond(make_response(req, 400, reason="Bad Contact"), now)
            return
        tx.respond(make_response(req, 100), now)
        address = self.public_address or peer.local_host
        dialog = Dialog(
            id=secrets.token_hex(6),
            call_id=req.call_id,
            local_tag=new_tag(),
            remote_tag=from_tag,
            local_header="",
            remote_header=req.headers.get("From") or "",
            remote_target=target,
            route_set=req.headers.get_all("Record-Route"),
            remote_cseq=req.cseq().number,
            peer=peer,
            session=LocalSession(address, secrets.randbelow(2**31)),
            invite=req,
            invite_tx=tx,
            offer=offer,
            choice=choice,
        )
        dialog.local_header = f"{req.headers.get('To')};tag={dialog.local_tag}"
        self._dialogs[dialog.id] = dialog
        self._by_tags[(req.call_id, dialog.local_tag, from_tag)] = dialog
        self._by_remote[(req.call_id, from_tag)] = dialog
        self._tx_dialog[tx.key] = dialog
        self._out.append(CallOffered(dialog.id, dialog.remote_identity, choice, peer))

    def _read_offer(
        self, req: Request, prefer: MediaChoice | None
    ) -> tuple[SessionDescription | None, MediaChoice | None, tuple[int, str] | None]:
        if not req.body:
            return None, None, None
        if req.content_type() != "application/sdp":
            return None, None, (415, "Unsupported Media Type")
        try:
            offer = SessionDescription.parse(req.body)
            return offer, negotiate(offer, prefer=prefer.codec if prefer else None), None
        except SdpError as exc:
            return None, None, (488, f"Not Acceptable Here ({str(exc)[:60]})")

    def _answer_invite(self, dialog: Dialog, now: float) -> None:
        assert dialog.invite_tx is not None
        if dialog.offer is not None and dialog.choice is not None:
            body = dialog.session.answer(dialog.offer, dialog.choice, dialog.rtp_port)
            dialog.awaiting_answer = False
        else:
            body = dialog.session.offer(dialog.rtp_port)
            dialog.awaiting_answer = True
        uri_transport = ";transport=tcp" if dialog.peer.transport == "TCP" else ""
        host = self.public_address or dialog.peer.local_host
        host = f"[{host}]" if ":" in host else host
        contact = f"<sip:omni-rtc@{host}:{dialog.peer.local_port}{uri_transport}>"
        headers = [("Contact", contact), ("Allow", ALLOW), ("Supported", "")]
        headers.append(("Server", self.user_agent))
        response = make_response(
            dialog.invite, 200, to_tag=dialog.local_tag, headers=headers, body=body
        )
        dialog.invite_tx.respond(response, now)
        data, dest = response.serialize(), response_peer(dialog.invite, dialog.peer)
        dialog.send_2xx(
            data,
            dialog.invite.cseq().number,
            now,
            self.timers,
            lambda d: self._send(d, dest),
            lambda at: self._no_ack(dialog, at),
        )

    def _no_ack(self, dialog: Dialog, now: float) -> None:
        log.info("call %s: no ACK for the 2xx after 64*T1", dialog.id)
        self._send_bye(dialog, now)
        self._end(dialog, "no ACK")

    def _reinvite(self, dialog: Dialog, req: Request, tx: ServerTransaction, now: float) -> None:
        if dialog.state != "confirmed" or dialog.awaiting_ack:
            retry = [("Retry-After", "1")]
            tx.respond(make_response(req, 500, to_tag=dialog.local_tag, headers=retry), now)
            return
        offer, choice, failure = self._read_offer(req, dialog.choice)
        if failure:
            status, reason = failure
            tx.respond(make_response(req, status, reason=reason, to_tag=dialog.local_tag), now)
            return
        contacts = req.headers.get_all("Contact")
        if contacts:
            with contextlib.suppress(HeaderError):
                dialog.remote_target = NameAddr.parse(contacts[0]).uri
        dialog.invite, dialog.invite_tx, dialog.offer = req, tx, offer
        if choice is not None:
            dialog.choice = choice
        self._tx_dialog[tx.key] = dialog
        self._answer_invite(dialog, now)
        if choice is not None:
            self._out.append(MediaChanged(dialog.id, choice))

    def _cancel(self, req: Request, tx: ServerTransaction, now: float) -> None:
        invite_key = (*transaction_key(req)[:-1], "INVITE")
        invite_tx = self._server_txs.get(invite_key)
        if invite_tx is None:
            tx.respond(make_response(req, 481), now)
            return
        tx.respond(make_response(req, 200), now)
        dialog = self._tx_dialog.get(invite_key)
        if invite_tx.state == "proceeding":
            to_tag = dialog.local_tag if dialog else new_tag()
            invite_tx.respond(make_response(invite_tx.request, 487, to_tag=to_tag), now)
            if dialog is not None and dialog.state == "offered":
                self._end(dialog, "CANCEL")

    def _send_bye(self, dialog: Dialog, now: float) -> None:
        req, dest = dialog.request("BYE", new_branch())
        call = dialog.id

        def done(response: Response | None, at: float) -> None:
            status = response.status if response else "timeout"
            log.debug("call %s: BYE answered %s", call, status)

        self.send_request(req, dest, done, now)

    def _end(self, dialog: Dialog, reason: str) -> None:
        if dialog.state == "ended":
            return
        self._forget(dialog)
        self._out.append(CallEnded(dialog.id, reason))

    def _forget(self, dialog: Dialog) -> None:
        dialog.state = "ended"
        dialog.stop_2xx()
        self._dialogs.pop(dialog.id, None)
        self._by_tags.pop((dialog.call_id, dialog.local_tag, dialog.remote_tag), None)
        self._by_remote.pop((dialog.call_id, dialog.remote_tag), None)

    def shutdown(self, now: float) -> None:
        """Hang up every call (BYE / 480) before the transport closes."""
        for call in list(self._dialogs):
            self.hangup(call, "shutdown", now)

    def _ack(self, req: Request, key: tuple[str, ...], now: float) -> None:
        tx = self._server_txs.get(key)
        if tx is not None and tx.state in ("completed", "confirmed"):
            tx.ack(now)  # ACK of a non-2xx final response
            return
        to_tag, from_tag = req.to().tag or "", req.from_().tag or ""
        dialog = self._by_tags.get((req.call_id, to_tag, from_tag))
        if dialog is None or not dialog.ack_matches(req.cseq().number):
            return  # retransmitted or stray ACK
        dialog.stop_2xx()
        if dialog.awaiting_answer:
            dialog.awaiting_answer = False
            try:
                answer = SessionDescription.parse(req.body)
                dialog.choice = negotiate(answer)
            except SdpError as exc:
                log.info("call %s: unusable answer in ACK: %s", dialog.id, exc)
                self._send_bye(dialog, now)
                self._end(dialog, "bad SDP answer in ACK")
                return
            if not dialog.initial:
                self._out.append(MediaChanged(dialog.id, dialog.choice))
        if dialog.initial:
            dialog.initial = False
            dialog.state = "confirmed"
            assert dialog.choice is not None
            self._out.append(CallConfirmed(dialog.id, dialog.choice))

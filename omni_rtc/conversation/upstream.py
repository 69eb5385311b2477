"""The realtime service's events applied to a conversation.

Kept apart from :mod:`.core` so the rules for what each server event means (which reply
audio to drop after a barge-in, when a close is a time limit to renew through) read in
one place.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..realtime import events as ev
from ..realtime.errors import UpstreamClosed

if TYPE_CHECKING:
    from .core import Conversation

log = logging.getLogger("omni_rtc.call")


class UpstreamEvents:
    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self._ignored_responses: set[str] = set()
        self._current_response: str | None = None
        self._assistant_text = ""
        self._session_limit_hit = False

    def ignore_current_response(self) -> None:
        """Audio of the interrupted reply may still be in flight: drop it when it comes."""
        if self._current_response:
            self._ignored_responses.add(self._current_response)

    async def pump(self) -> None:
        """Read the session until it ends; renew it across the service's time limits."""
        conv = self.conversation
        while True:
            client = conv.client
            assert client is not None
            try:
                async for event in client:
                    await self.apply(event)
                return  # we closed it
            except UpstreamClosed as exc:
                if self._session_limit_hit:
                    self._session_limit_hit = False
                    self._forget_responses()
                    if await conv.renew_session():
                        continue
                await self._lost(exc)
                return

    def _forget_responses(self) -> None:
        self._ignored_responses.clear()
        self._current_response = None

    async def _lost(self, exc: UpstreamClosed) -> None:
        conv = self.conversation
        log.warning("call %s: upstream closed: %s", conv.id, str(exc))
        conv.report_error(f"The model service ended the session: {exc.reason or 'connection lost'}")
        await conv.close("upstream_closed")

    async def apply(self, event: ev.ServerEvent) -> None:
        conv = self.conversation
        client = conv.client
        assert client is not None
        if isinstance(event, ev.AudioDelta):
            if event.response_id not in self._ignored_responses:
                conv.play(event.delta)
        elif isinstance(event, ev.SpeechStarted):
            if conv.sink.playing or client.state.response_active:
                await conv.barge_in()
            conv.set_state("listening")
        elif isinstance(event, ev.SpeechStopped):
            conv.turn_ended()
            conv.set_state("thinking")
        elif isinstance(event, ev.InputTranscriptionCompleted):
            conv.report_transcript("user", event.transcript, True)
        elif isinstance(event, ev.ResponseCreated):
            self._current_response = event.response_id
            self._assistant_text = ""
            conv.sink.new_reply()
        elif isinstance(event, (ev.AudioTranscriptDelta, ev.TextDelta)):
            if event.response_id not in self._ignored_responses:
                self._assistant_text += event.delta
                conv.report_transcript("assistant", self._assistant_text, False)
        elif isinstance(event, (ev.AudioTranscriptDone, ev.TextDone)):
            if event.response_id not in self._ignored_responses:
                text = event.transcript if isinstance(event, ev.AudioTranscriptDone) else event.text
                conv.report_transcript("assistant", text, True)
        elif isinstance(event, ev.AudioDone):
            conv.end_of_reply()
        elif isinstance(event, ev.ResponseDone):
            self._response_done(event)
        elif isinstance(event, ev.ErrorEvent):
            self._error(event)

    def _response_done(self, event: ev.ResponseDone) -> None:
        conv = self.conversation
        conv.reply_done()
        if event.status == "failed":
            details = event.response.get("status_details") or {}
            reason = details.get("error", {}).get("message") if isinstance(details, dict) else None
            conv.report_error(f"The reply failed: {reason or 'unknown'}")

    def _error(self, event: ev.ErrorEvent) -> None:
        conv = self.conversation
        profile = conv.profile
        if any(fragment in event.message for fragment in profile.session_limit_errors):
            self._session_limit_hit = True  # the close that follows renews the session
            log.info("call %s: model session limit: %s", conv.id, event.message)
            return
        if event.message in profile.benign_errors:
            log.debug("call %s: expected upstream error: %s", conv.id, event.message)
            return
        conv.metrics.upstream_errors.inc()
        log.warning("call %s: upstream error: %s", conv.id, event.message)
        conv.report_error(f"Model service: {event.message}")

"""The realtime session side of a conversation: its events, and keeping it alive.

What each server event means (which reply audio to drop after a barge-in, which close is
a time limit) and how a lost session is replaced (at once, then with backoff, within a
bounded time) read in one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..realtime import events as ev
from ..realtime.client import RealtimeClient
from ..realtime.errors import AuthenticationFailed, RealtimeError, UpstreamClosed
from .events import CallError, Notice

if TYPE_CHECKING:
    from .core import Conversation

log = logging.getLogger("omni_rtc.call")

BACKOFF_S = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
"""Waits before each reconnect attempt: at once first, then longer, capped."""


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
        """Read the session until we close it; replace it whenever the service loses it."""
        conv = self.conversation
        while True:
            client = conv.client
            assert client is not None
            try:
                async for event in client:
                    await self.apply(event)
                return  # we closed it
            except UpstreamClosed as exc:
                planned = self._session_limit_hit
                self._session_limit_hit = False
                self._ignored_responses.clear()
                self._current_response = None
                if not await self._replace(client, exc, planned=planned):
                    return

    async def _replace(self, lost: RealtimeClient, exc: UpstreamClosed, *, planned: bool) -> bool:
        """Open a new session with the same settings; False when the call must end."""
        conv = self.conversation
        conv.uplink.ready.clear()
        mid_sentence = lost.state.user_speaking
        replay = conv.uplink.take_replay()
        conv.downlink.drop()
        if planned:
            log.info("call %s: the model session hit a time limit; renewing it", conv.id)
        else:
            log.warning("call %s: upstream lost (%s); reconnecting", conv.id, str(exc))
            conv.metrics.upstream_reconnects.inc()
            conv.emit(Notice("Lost the connection to the model service; reconnecting…"))
        conv.set_state("listening")
        lost_at = time.monotonic()
        deadline = lost_at + conv.reconnect_seconds
        attempt = 0
        last_error = exc.reason or "connection lost"
        while True:
            wait = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            attempt += 1
            if time.monotonic() + wait >= deadline:
                break
            await asyncio.sleep(wait)
            try:
                client = await asyncio.wait_for(
                    conv.open_session_for_call(), max(0.1, deadline - time.monotonic())
                )
            except AuthenticationFailed:
                conv.emit(CallError("The model service rejected the server's API key."))
                await conv.close("upstream_auth", "the key was refused on reconnecting")
                return False
            except (RealtimeError, asyncio.TimeoutError) as error:
                last_error = str(error) or error.__class__.__name__
                log.info("call %s: reconnect attempt %d failed: %s", conv.id, attempt, last_error)
                continue
            await conv.swap_client(client)
            if mid_sentence:  # the new session hears the whole sentence, not its end
                conv.uplink.requeue_first(replay)
            conv.uplink.ready.set()
            gap = time.monotonic() - lost_at
            if planned:
                conv.metrics.upstream_rollovers.inc()
                conv.emit(
                    Notice(
                        "The model session reached its time limit and was renewed; "
                        "it does not remember the conversation so far."
                    )
                )
            else:
                log.info("call %s: reconnected to the model service after %.2f s", conv.id, gap)
                conv.emit(
                    Notice(
                        "Reconnected to the model service; "
                        "it does not remember the conversation so far."
                    )
                )
            return True
        conv.emit(CallError(f"The model service ended the session: {exc.reason or last_error}"))
        await conv.close("upstream_closed", f"not reachable again: {last_error}")
        return False

    async def apply(self, event: ev.ServerEvent) -> None:
        conv = self.conversation
        client = conv.client
        assert client is not None
        if isinstance(event, ev.AudioDelta):
            if event.response_id not in self._ignored_responses:
                conv.downlink.play(event.delta)
        elif isinstance(event, ev.SpeechStarted):
            conv.activity()
            if conv.sink.playing or client.state.response_active:
                await conv.barge_in()
            conv.set_state("listening")
        elif isinstance(event, ev.SpeechStopped):
            conv.downlink.turn_ended()
            conv.set_state("thinking")
        elif isinstance(event, ev.InputTranscriptionCompleted):
            conv.report_transcript("user", event.transcript, True)
        elif isinstance(event, ev.InputAudioBufferCommitted):
            conv.uplink.forget_sent()  # a finished turn: nothing to replay any more
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
            conv.downlink.end_of_reply()
        elif isinstance(event, ev.ResponseDone):
            self._response_done(event)
        elif isinstance(event, ev.ErrorEvent):
            self._error(event)

    def _response_done(self, event: ev.ResponseDone) -> None:
        conv = self.conversation
        conv.downlink.reply_done()
        if event.status == "failed":
            details = event.response.get("status_details") or {}
            reason = details.get("error", {}).get("message") if isinstance(details, dict) else None
            conv.emit(CallError(f"The reply failed: {reason or 'unknown'}"))

    def _error(self, event: ev.ErrorEvent) -> None:
        conv = self.conversation
        profile = conv.profile
        if any(fragment in event.message for fragment in profile.session_limit_errors):
            self._session_limit_hit = True  # the close that follows renews the session
            log.info("call %s: model session limit: %s", conv.id, event.message)
            return
        if any(fragment in event.message for fragment in profile.benign_errors):
            log.debug("call %s: expected upstream error: %s", conv.id, event.message)
            return
        conv.metrics.upstream_errors.inc()
        log.warning("call %s: upstream error: %s", conv.id, event.message)
        conv.emit(CallError(f"Model service: {event.message}"))

"""How the service validates and merges ``session.update`` (pure functions).

Error messages and ``param`` values follow the documented error shape so a client's
handling of them can be tested offline.
"""

from __future__ import annotations

import copy
from typing import Any

from ..realtime.profiles import ModelInfo


class SessionUpdateError(ValueError):
    def __init__(self, message: str, param: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def default_session(session_id: str, model: ModelInfo) -> dict[str, Any]:
    """The configuration announced in ``session.created``."""
    return {
        "id": session_id,
        "object": "realtime.session",
        "model": model.name,
        "modalities": ["text", "audio"],
        "instructions": "",
        "voice": model.default_voice,
        "input_audio_format": "pcm16",
        "output_audio_format": model.output_audio_format,
        "input_audio_transcription": {"model": "gummy-realtime-v1"},
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 800,
            "create_response": True,
            "interrupt_response": True,
        },
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
    }


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def apply_session_update(
    current: dict[str, Any],
    update: dict[str, Any],
    model: ModelInfo,
    *,
    audio_produced: bool,
) -> dict[str, Any]:
    """Return the new session config, or raise :class:`SessionUpdateError`."""
    new = copy.deepcopy(current)

    if "modalities" in update:
        modalities = update["modalities"]
        if not isinstance(modalities, list) or sorted(set(modalities)) not in (
            ["text"],
            ["audio", "text"],
        ):
            raise SessionUpdateError(
                f"Invalid modalities {modalities!r}: supported are ['text'] and ['text', 'audio']",
                "session.modalities",
            )
        new["modalities"] = list(modalities)

    voice = update.get("voice")
    if voice is not None:
        if not isinstance(voice, str):
            raise SessionUpdateError("voice must be a string", "session.voice")
        try:
            model.check_voice(voice)
        except ValueError:
            raise SessionUpdateError(
                f"Voice '{voice}' is not supported by model {model.name}", "session.voice"
            ) from None
        if audio_produced and voice != current.get("voice"):
            raise SessionUpdateError(
                "Cannot change voice after audio has been produced in this session",
                "session.voice",
            )
        new["voice"] = voice

    if "instructions" in update and update["instructions"] is not None:
        if not isinstance(update["instructions"], str):
            raise SessionUpdateError("instructions must be a string", "session.instructions")
        new["instructions"] = update["instructions"]

    in_format = update.get("input_audio_format")
    if in_format is not None and in_format not in ("pcm16", "pcm"):
        raise SessionUpdateError(
            f"Unsupported input_audio_format '{in_format}': use pcm16 (16 kHz mono)",
            "session.input_audio_format",
        )
    if in_format is not None:
        new["input_audio_format"] = "pcm16"
    nested = update.get("audio")
    if isinstance(nested, dict):
        rate = ((nested.get("input") or {}).get("format") or {}).get("sample_rate")
        if rate is not None and rate != 16000:
            raise SessionUpdateError(
                f"Unsupported input sample_rate {rate}: this model takes 16000",
                "session.audio.input.format.sample_rate",
            )

    out_format = update.get("output_audio_format")
    if out_format is not None:
        if out_format != model.output_audio_format:
            raise SessionUpdateError(
                f"Unsupported output_audio_format '{out_format}' for model {model.name}: "
                f"use {model.output_audio_format}",
                "session.output_audio_format",
            )
        new["output_audio_format"] = out_format

    if "input_audio_transcription" in update:
        transcription = update["input_audio_transcription"]
        if transcription is not None and not isinstance(transcription, dict):
            raise SessionUpdateError(
                "input_audio_transcription must be an object or null",
                "session.input_audio_transcription",
            )
        new["input_audio_transcription"] = transcription

    if "turn_detection" in update:
        new["turn_detection"] = _turn_detection(update["turn_detection"])

    if model.sampling_parameters:
        temperature = update.get("temperature")
        if temperature is not None:
            if not _number(temperature) or not 0 <= temperature < 2:
                raise SessionUpdateError("temperature must be in [0, 2)", "session.temperature")
            new["temperature"] = temperature
        for key in (
            "top_p",
            "top_k",
            "max_tokens",
            "repetition_penalty",
            "presence_penalty",
            "seed",
            "smooth_output",
        ):
            if key in update:
                new[key] = update[key]
    return new


def _turn_detection(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SessionUpdateError(
            "turn_detection must be an object or null", "session.turn_detection"
        )
    kind = value.get("type", "server_vad")
    if kind != "server_vad":
        raise SessionUpdateError(
            f"Unsupported turn_detection type '{kind}': use server_vad",
            "session.turn_detection.type",
        )
    threshold = value.get("threshold", 0.5)
    if not _number(threshold) or not -1 <= threshold <= 1:
        raise SessionUpdateError(
            f"turn_detection.threshold must be within [-1, 1], got {threshold!r}",
            "session.turn_detection.threshold",
        )
    padding = value.get("prefix_padding_ms", 300)
    if not isinstance(padding, int) or isinstance(padding, bool) or not 0 <= padding <= 5000:
        raise SessionUpdateError(
            f"turn_detection.prefix_padding_ms must be an integer in [0, 5000], got {padding!r}",
            "session.turn_detection.prefix_padding_ms",
        )
    silence = value.get("silence_duration_ms", 800)
    if not isinstance(silence, int) or isinstance(silence, bool) or not 200 <= silence <= 6000:
        raise SessionUpdateError(
            "turn_detection.silence_duration_ms must be an integer in [200, 6000], "
            f"got {silence!r}",
            "session.turn_detection.silence_duration_ms",
        )
    return {
        "type": "server_vad",
        "threshold": threshold,
        "prefix_padding_ms": padding,
        "silence_duration_ms": silence,
        "create_response": True,
        "interrupt_response": True,
    }

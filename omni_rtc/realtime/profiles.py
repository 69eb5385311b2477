"""Provider profiles: everything that differs between realtime services.

Sample rates, voices, URLs, auth headers and the barge-in strategy live here so no
other module hard-codes them.  A profile is plain data plus pure helpers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .session import ServerVad, SessionConfig

VOICE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class BargeInStrategy:
    """What to do upstream when the user starts talking over a reply.

    Queued reply audio is always dropped locally; these flags add protocol steps.
    """

    cancel_response: bool = True
    truncate_item: bool = False


@dataclass(frozen=True)
class ModelInfo:
    name: str
    voices: tuple[str, ...]
    """Known voices, default first."""
    output_audio_format: str = "pcm16"
    sampling_parameters: bool = False
    """Whether temperature/top_p/... are accepted (Qwen-Omni-Turbo fixes them)."""
    open_voice_list: bool = False
    """True when the service has more voices than we list; any well-formed name is passed on."""

    @property
    def default_voice(self) -> str:
        return self.voices[0]

    def check_voice(self, voice: str) -> str:
        """Return the voice or raise ``ValueError`` naming the valid choices."""
        if voice in self.voices:
            return voice
        if self.open_voice_list and VOICE_NAME.match(voice):
            return voice
        raise ValueError(
            f"unknown voice {voice!r} for model {self.name}; choose one of: "
            + ", ".join(self.voices)
        )


@dataclass(frozen=True)
class ProviderProfile:
    name: str
    regions: Mapping[str, str]
    """Region name -> WebSocket base URL (without ``?model=``); the first is the default."""
    input_rate: int
    output_rate: int
    models: Mapping[str, ModelInfo]
    default_model: str
    api_key_env: str
    transcription_model: str | None
    barge_in: BargeInStrategy
    vad_threshold_range: tuple[float, float]
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    benign_errors: tuple[str, ...] = ()
    """Error messages that race with our own barge-in and mean nothing to a user."""
    session_limit_errors: tuple[str, ...] = ()
    """Fragments of the error the service sends before closing a session that hit a time
    limit (idle or maximum duration); the call then renews the session instead of ending."""

    @property
    def default_url(self) -> str:
        return next(iter(self.regions.values()))

    def model(self, name: str | None = None) -> ModelInfo:
        """Look a model up; dated snapshots (``…-2025-05-08``, ``…-latest``) match their family."""
        name = name or self.default_model
        if name in self.models:
            return self.models[name]
        family = max((m for m in self.models if name.startswith(m + "-")), key=len, default=None)
        if family is None:
            raise ValueError(
                f"unknown model {name!r} for provider {self.name}; known: " + ", ".join(self.models)
            )
        info = self.models[family]
        return ModelInfo(
            name=name,
            voices=info.voices,
            output_audio_format=info.output_audio_format,
            sampling_parameters=info.sampling_parameters,
            open_voice_list=info.open_voice_list,
        )

    def url(self, model: str, base_url: str | None = None) -> str:
        """The WebSocket URL for ``model``, keeping any query the base URL already has."""
        parts = urlsplit(base_url or self.default_url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "model"]
        query.append(("model", model))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def headers(self, api_key: str | None) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def session_config(
        self,
        *,
        model: str | None = None,
        voice: str | None = None,
        instructions: str | None = None,
        manual: bool = False,
        vad_threshold: float | None = None,
        vad_silence_ms: int | None = None,
        transcribe: bool = True,
        sampling: Mapping[str, Any] | None = None,
    ) -> SessionConfig:
        """Build a validated ``session.update`` for this provider; ``ValueError`` on bad input."""
        info = self.model(model)
        chosen_voice = info.check_voice(voice) if voice else info.default_voice
        turn_detection: ServerVad | None = None
        if not manual:
            vad = ServerVad()
            threshold = vad.threshold if vad_threshold is None else vad_threshold
            low, high = self.vad_threshold_range
            if not low <= threshold <= high:
                raise ValueError(f"VAD threshold must be within [{low}, {high}], got {threshold}")
            silence = vad.silence_duration_ms if vad_silence_ms is None else vad_silence_ms
            if not 200 <= silence <= 6000:
                raise ValueError(f"VAD silence must be 200..6000 ms, got {silence}")
            turn_detection = ServerVad(threshold, vad.prefix_padding_ms, silence)
        if sampling and not info.sampling_parameters:
            raise ValueError(f"model {info.name} does not accept sampling parameters")
        return SessionConfig(
            voice=chosen_voice,
            instructions=instructions or None,
            input_audio_format="pcm16",
            output_audio_format=info.output_audio_format,
            transcription_model=self.transcription_model if transcribe else None,
            turn_detection=turn_detection,
            sampling=dict(sampling or {}),
        )


DASHSCOPE = ProviderProfile(
    name="dashscope",
    regions={
        "beijing": "wss://dashscope.aliyuncs.com/api-ws/v1/realtime",
        "singapore": "wss://dashscope-intl.aliyuncs.com/api-ws/v1/realtime",
    },
    input_rate=16_000,
    output_rate=24_000,
    models={
        "qwen-omni-turbo-realtime": ModelInfo(
            "qwen-omni-turbo-realtime", ("Chelsie", "Serena", "Ethan", "Cherry")
        ),
        "qwen3-omni-flash-realtime": ModelInfo(
            "qwen3-omni-flash-realtime",
            (
                "Cherry",
                "Ethan",
                "Nofish",
                "Jennifer",
                "Ryan",
                "Katerina",
                "Elias",
                "Jada",
                "Dylan",
                "Sunny",
                "Li",
                "Marcus",
                "Roy",
                "Peter",
                "Rocky",
                "Kiki",
                "Eric",
            ),
            output_audio_format="pcm24",
            sampling_parameters=True,
            open_voice_list=True,  # newer snapshots have 49 voices
        ),
        "qwen3.5-omni-plus-realtime": ModelInfo(
            "qwen3.5-omni-plus-realtime",
            ("Tina",),
            sampling_parameters=True,
            open_voice_list=True,  # 55 voices
        ),
        "qwen3.5-omni-flash-realtime": ModelInfo(
            "qwen3.5-omni-flash-realtime",
            ("Tina",),
            sampling_parameters=True,
            open_voice_list=True,
        ),
    },
    default_model="qwen-omni-turbo-realtime",
    api_key_env="DASHSCOPE_API_KEY",
    transcription_model="gummy-realtime-v1",
    barge_in=BargeInStrategy(cancel_response=True, truncate_item=False),
    vad_threshold_range=(-1.0, 1.0),
    # an image sent just as the service's VAD committed the buffer lands on an empty one:
    # that image is lost, the next one (a fraction of a second later) goes through
    benign_errors=(
        "Conversation has none active response",
        "append image before append audio",
    ),
    # "Your session was closed because no response was generated for 300 seconds."
    session_limit_errors=("Your session was closed because", "maximum duration"),
)

OPENAI = ProviderProfile(
    name="openai",
    regions={"global": "wss://api.openai.com/v1/realtime"},
    input_rate=24_000,
    output_rate=24_000,
    models={
        "gpt-4o-realtime-preview": ModelInfo(
            "gpt-4o-realtime-preview",
            ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse"),
            sampling_parameters=True,
        ),
        "gpt-4o-mini-realtime-preview": ModelInfo(
            "gpt-4o-mini-realtime-preview",
            ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse"),
            sampling_parameters=True,
        ),
    },
    default_model="gpt-4o-realtime-preview",
    api_key_env="OPENAI_API_KEY",
    transcription_model="whisper-1",
    barge_in=BargeInStrategy(cancel_response=True, truncate_item=True),
    vad_threshold_range=(0.0, 1.0),
    extra_headers={"OpenAI-Beta": "realtime=v1"},
    benign_errors=("Cancellation failed: no active response found",),
    session_limit_errors=("maximum duration",),
)

PROFILES: dict[str, ProviderProfile] = {p.name: p for p in (DASHSCOPE, OPENAI)}


def get_profile(name: str) -> ProviderProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown provider {name!r}; choose one of: " + ", ".join(PROFILES)
        ) from None

"""The script format (YAML or JSON) as pydantic models: the one definition that the CLI, the HTTP API and the script
service's drafts are all checked against."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.common import finishing, limits

_COLOR = r"^#[0-9A-Fa-f]{6}$"


class _Strict(BaseModel):
    # No NaN or infinity in any number: `max_cost_usd: .inf` passes `ge=0` and would ask for no cap at all, and
    # the gateway refuses both anyway.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SceneModel(_Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    narration: str = Field(min_length=1)
    visual: str = ""
    title: str = ""
    # "still" or "clip" overrides the render's choice for this scene; empty follows it.
    show: Literal["", "still", "clip"] = ""


class OutputModel(_Strict):
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9"
    height: int = Field(720, ge=144, le=2160)
    fps: int = Field(30, ge=1, le=60)
    captions: bool = True
    quality: Literal["draft", "standard", "hd"] = "standard"
    # "variable": each distinct picture encoded once, held for its real duration (faster, smaller; some editing
    # programs expect every frame to last the same).
    frame_rate_mode: Literal["constant", "variable"] = "constant"


class ProvidersModel(_Strict):
    image: str = ""
    speech: str = ""
    video: str = ""
    avatar: str = ""


class AvatarModel(_Strict):
    avatar: str = ""
    voice: str = ""
    background: str = ""


class CaptionsModel(_Strict):
    # Colour the word being spoken.
    highlight: bool = False
    highlight_color: str = Field("", pattern=_COLOR)
    # A semi-opaque box behind the text instead of an outline only.
    box: bool = False


class LoudnessModel(_Strict):
    # Integrated loudness to reach, in LUFS; unset means -16.
    lufs: float | None = Field(None, ge=finishing.LUFS_RANGE[0], le=finishing.LUFS_RANGE[1])
    # Ceiling for the true peak, in dBTP; unset means -1.5.
    true_peak: float | None = Field(None, ge=finishing.TRUE_PEAK_RANGE[0], le=finishing.TRUE_PEAK_RANGE[1])


class CardModel(_Strict):
    title: str = Field(min_length=1, max_length=limits.MAX_CARD_TITLE_CHARS)
    subtitle: str = Field("", max_length=limits.MAX_CARD_SUBTITLE_CHARS)
    # Zero means 3000.
    duration_ms: int = Field(0, ge=0, le=finishing.CARD_MS_RANGE[1])


class MusicModel(_Strict):
    # A music file, relative to the script's folder; uploaded before the render.
    file: str = ""
    # Or a file name in the gateway's music library (MUSIC_LIBRARY_DIR).
    library: str = ""
    # Or the id of music uploaded already (UploadMusic, or POST /v1/music over HTTP).
    upload: str = ""
    # Level of the music before ducking, in dB; unset means -20.
    gain_db: float | None = Field(None, ge=finishing.MUSIC_GAIN_RANGE[0], le=finishing.MUSIC_GAIN_RANGE[1])
    # Lower the music under the narration; unset means yes.
    duck: bool | None = None
    # Fade in and out, in milliseconds; unset means 1500.
    fade_ms: int | None = Field(None, ge=0, le=finishing.MAX_MUSIC_FADE_MS)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if [bool(self.file), bool(self.library), bool(self.upload)].count(True) != 1:
            raise ValueError(
                "give one of `file` (a path), `library` (a name in the gateway's music library) "
                "or `upload` (the id of uploaded music)"
            )
        return self


class FinishingModel(_Strict):
    # Unset fields keep the assembler's defaults: fades through black, black bars, plain captions, -16 LUFS.
    transition: Literal["fade", "crossfade", "cut"] | None = None
    transition_ms: int = Field(0, ge=0, le=finishing.MAX_TRANSITION_MS)
    fit: Literal["pad_color", "pad_blur", "crop"] | None = None
    pad_color: str = Field("", pattern=_COLOR)
    captions: CaptionsModel = CaptionsModel()
    sidecars: list[Literal["srt", "vtt"]] = []
    # `off` leaves the mix as it is.
    loudness: LoudnessModel | Literal["off"] = LoudnessModel()
    silence_pad_ms: int | None = Field(None, ge=0, le=finishing.MAX_SILENCE_PAD_MS)
    title_card: CardModel | None = None
    end_card: CardModel | None = None
    music: MusicModel | None = None

    # The schema takes what the loader takes: PyYAML (YAML 1.1) reads a bare `off` as false, editors (1.2) as "off".
    @field_validator("loudness", mode="before", json_schema_input_type=LoudnessModel | Literal["off", False])
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false


class ScriptModel(_Strict):
    title: str = Field("", max_length=200)
    output: OutputModel = OutputModel()
    providers: ProvidersModel = ProvidersModel()
    voice: str = ""
    # Most the render may spend, in US dollars; 0 leaves it to the gateway's MAX_RENDER_COST_USD.
    max_cost_usd: float = Field(0.0, ge=0)
    avatar: AvatarModel = AvatarModel()
    finishing: FinishingModel = FinishingModel()
    scenes: list[SceneModel] = Field(min_length=1)

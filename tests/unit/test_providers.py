"""Providers own their settings (read once, .env honoured, secrets redacted), their prices and the settings that
change their output; the registry refuses a provider that declares no price."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import SecretStr, ValidationError

from services.audio.providers import PROVIDERS as SPEECH_PROVIDERS
from services.audio.providers import build_registry as speech_registry
from services.audio.providers.base import SpeechJob
from services.audio.providers.openai_tts import OpenAISpeechProvider, OpenAISpeechSettings
from services.common.cache import speech_key
from services.common.errors import MissingCredential
from services.common.openai_errors import OpenAISettings, openai_client
from services.common.providers import NoSettings, Price, Provider, ProviderDescription, ProviderRegistry, Quality
from services.common.redact import REDACTED, redact
from services.common.replicate_runner import TOKEN_FIELD, ReplicateProvider, ReplicateSettings
from services.image.providers import PROVIDERS as IMAGE_PROVIDERS
from services.image.providers import build_registry as image_registry
from services.image.providers.base import ImageJob
from services.video.providers import PROVIDERS as CLIP_PROVIDERS
from services.video.providers.selfhosted import SelfHostedSettings

SPEECH_MODULE = "services.audio.providers.openai_tts"


def _image(quality: Quality, aspect: str) -> ImageJob:
    return ImageJob("a ladder", "Ladders", 0, 1280, 720, quality, aspect)


def _speech(characters: int, quality: Quality) -> SpeechJob:
    return SpeechJob("a" * characters, "", quality)


def test_published_prices() -> None:
    images = image_registry("slides", [OpenAISettings()])
    assert images.estimate_usd("dall-e-3", _image(Quality.HD, "16:9")) == 0.12
    assert images.estimate_usd("dall-e-3", _image(Quality.DRAFT, "1:1")) == 0.04
    assert images.estimate_usd("gpt-image-1-mini", _image(Quality.DRAFT, "9:16")) == 0.006
    assert images.estimate_usd("gpt-image-1-mini", _image(Quality.HD, "1:1")) == 0.036
    assert images.estimate_usd("flux", _image(Quality.HD, "16:9")) == 0.025
    assert images.estimate_usd("slides", _image(Quality.HD, "16:9")) == 0.0
    speech = speech_registry("", [OpenAISpeechSettings()])
    assert speech.estimate_usd("openai", _speech(1_000_000, Quality.STANDARD)) == pytest.approx(15.0)
    assert speech.estimate_usd("openai", _speech(1000, Quality.HD)) == pytest.approx(0.03)
    assert speech.estimate_usd("edge", _speech(1000, Quality.HD)) == 0.0
    assert speech.estimate_usd("piper", _speech(1000, Quality.HD)) == 0.0


def test_every_price_says_what_it_is_for() -> None:
    for registry in (image_registry("", [OpenAISettings()]), speech_registry("", [OpenAISpeechSettings()])):
        for summary in registry.summaries():
            assert summary.prices, summary.name
            assert all(price.unit and price.note for price in summary.prices if price.usd_per_unit == 0), summary
    [summary] = [s for s in speech_registry("").summaries() if s.name == "openai"]  # by name: the list grows
    openai = {p.model: p for p in summary.prices}
    assert (openai["tts-1"].unit, openai["tts-1"].usd_per_unit) == ("1M characters", 15.0)


class _Unpriced(Provider[NoSettings, ImageJob]):
    description = ProviderDescription(name="unpriced", description="forgot its price", offline=False)


class _Offline(Provider[NoSettings, ImageJob]):
    description = ProviderDescription(name="offline", description="declares 0", offline=True)

    @classmethod
    def prices(cls, settings: NoSettings) -> tuple[Price, ...]:
        return (Price("local", "image", 0.0, "offline"),)

    @classmethod
    def estimate_usd(cls, settings: NoSettings, job: ImageJob) -> float:
        return 0.0


class _MisnamedOutput(_Offline):
    description = ProviderDescription(name="misnamed", description="names a setting it lacks", offline=True)
    settings_class = OpenAISettings
    output_settings: ClassVar[tuple[str, ...]] = ("openai_base_ulr",)


def test_a_provider_without_a_price_refuses_to_start() -> None:
    with pytest.raises(TypeError, match=r"'unpriced' declares no price \(prices and estimate_usd\)"):
        ProviderRegistry([_Offline, _Unpriced], "offline", "IMAGE_PROVIDER")
    assert (
        ProviderRegistry([_Offline], "offline", "IMAGE_PROVIDER").estimate_usd("offline", _image(Quality.HD, "1:1"))
        == 0
    )


def test_an_output_setting_the_settings_lack_refuses_to_start() -> None:
    with pytest.raises(TypeError, match="openai_base_ulr"):
        ProviderRegistry([_MisnamedOutput], "", "IMAGE_PROVIDER", [OpenAISettings()])


def test_every_replicate_provider_needs_the_token_and_keys_its_output_by_the_api_url() -> None:
    on_replicate = [
        provider
        for provider in (*IMAGE_PROVIDERS, *SPEECH_PROVIDERS, *CLIP_PROVIDERS)
        if issubclass(provider.settings_class, ReplicateSettings)
    ]
    assert {provider.description.name for provider in on_replicate} == {"sdxl", "flux", "kokoro", "wan"}
    for provider in on_replicate:
        assert issubclass(provider, ReplicateProvider), provider
        assert provider.required_settings == (TOKEN_FIELD,)
        assert "replicate_base_url" in provider.output_settings


def test_settings_come_from_dotenv_in_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_TTS_VOICE"):
        monkeypatch.delenv(variable, raising=False)
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv-123456\nOPENAI_TTS_VOICE=nova\n")
    monkeypatch.chdir(tmp_path)
    settings = OpenAISpeechSettings()
    assert (settings.openai_api_key.get_secret_value(), settings.openai_tts_voice) == ("sk-from-dotenv-123456", "nova")
    # Registered when read, before any request could carry it to a vendor that echoes it.
    assert redact("vendor said: bad key sk-from-dotenv-123456") == f"vendor said: bad key {REDACTED}"
    summary = next(s for s in speech_registry("", [settings]).summaries() if s.name == "openai")
    assert (summary.required_env, summary.configured) == (("OPENAI_API_KEY",), True)


def test_a_missing_secret_fails_the_request_naming_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = OpenAISettings(_env_file=None)
    with pytest.raises(MissingCredential, match="provider 'dall-e-3' needs the environment variable OPENAI_API_KEY"):
        openai_client(settings, "dall-e-3")


def test_the_default_is_the_settings_value_read_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = image_registry("slides", [OpenAISettings()])
    monkeypatch.setenv("IMAGE_PROVIDER", "dall-e-3")
    assert registry.get("", "provider")[0] == "slides"
    assert registry.resolve("", "provider") == "slides"


def test_a_changed_output_setting_changes_the_cache_key() -> None:
    job = SpeechJob("Check the ladder.", "", Quality.STANDARD)
    base = OpenAISpeechSettings(_env_file=None, openai_api_key="sk-one-123456")

    def key(settings: OpenAISpeechSettings) -> str:
        registry = speech_registry("", [settings])
        return speech_key("openai", SPEECH_MODULE, registry.fingerprint("openai"), job)

    plain = key(base)
    assert OpenAISpeechProvider.output_settings == ("openai_base_url", "openai_tts_format", "openai_tts_voice")
    for changed in ({"openai_base_url": "http://proxy"}, {"openai_tts_format": "mp3"}, {"openai_tts_voice": "nova"}):
        assert key(base.model_copy(update=changed)) != plain, changed
    # The key is not an output setting: a rotated key finds what the old one paid for.
    assert key(base.model_copy(update={"openai_api_key": SecretStr("sk-two-123456")})) == plain


def test_the_gateway_imports_no_price_table() -> None:
    """Prices live with their providers, behind the media services: the gateway asks the services (Estimate*Cost)."""
    root = Path(__file__).resolve().parents[2]
    imported = set()
    for path in (root / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
    price_sources = re.compile(r"services\.common\.pricing|services\.(image|audio|video)\.(providers|avatars)")
    assert not {name for name in imported if price_sources.match(name)}


def test_settings_no_provider_takes_are_refused() -> None:
    """A test (or a caller) that hands the audio service the image service's OpenAI settings learns it at once."""
    with pytest.raises(ValueError, match="no provider of this service takes OpenAISettings"):
        speech_registry("", [OpenAISettings()])


def test_a_refused_setting_is_not_kept_as_a_secret() -> None:
    """Only settings that passed every check are registered for redaction: "http://", refused as a server URL, would
    otherwise be cut out of every later message of the process (it was, from an FFmpeg command line)."""
    with pytest.raises(ValidationError):
        SelfHostedSettings(selfhosted_video_url=SecretStr("http://"))
    assert redact("cannot reach http://gpu-box:5000") == "cannot reach http://gpu-box:5000"
    SelfHostedSettings(selfhosted_video_url=SecretStr("http://user:a-long-password@gpu-box:5000"))
    assert redact("password a-long-password") == f"password {REDACTED}"

"""Script providers, keyed by the name used in SCRIPT_PROVIDER and in requests."""

from __future__ import annotations

from collections.abc import Iterable

from services.common.providers import ProviderRegistry, ProviderSettings
from services.script.providers.base import ScriptProvider
from services.script.providers.openai_chat import OpenAIChatProvider
from services.script.providers.outline import OutlineProvider

# Adding a provider is one module and one line here.
PROVIDERS = (
    OutlineProvider,
    OpenAIChatProvider,
)


def build_registry(default: str, settings: Iterable[ProviderSettings] = ()) -> ProviderRegistry[ScriptProvider]:
    """`settings`: provider settings to use instead of reading them from the environment (tests pass them)."""
    return ProviderRegistry(PROVIDERS, default, "SCRIPT_PROVIDER", settings)

"""The shape every provider has (its settings, its price, its output settings) and the registry that builds them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import InvalidArgument, MissingCredential, quoted
from services.common.redact import register_settings

# Typical narration pace, used to guess spoken lengths (clips, avatar videos) before the speech exists.
SPOKEN_CHARS_PER_SECOND = 15.0


class Quality(str, Enum):
    """Quality asked of a provider; mirrors scenecast.v1.Quality without the protobuf dependency."""

    DRAFT = "draft"
    STANDARD = "standard"
    HD = "hd"


class ProviderSettings(BaseSettings):
    """A provider's own settings: subclasses add fields named after their variables (`openai_api_key` is read from
    OPENAI_API_KEY, in the environment or the working folder's .env). Read once at start-up, frozen after; secrets
    are SecretStr with an empty default, so a missing one fails the request that needs it, never the start-up."""

    # hide_input_in_errors: a start-up error must not print the other settings' values (tokens among them).
    # env_ignore_empty: a variable set to "" means its default, as it always has (`VOICE=` in a compose file).
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", hide_input_in_errors=True, frozen=True, env_ignore_empty=True
    )

    def __init__(self, *args: Any, **values: Any) -> None:
        super().__init__(*args, **values)
        # Before any request carries a secret (a vendor may echo it in an error, which is then redacted), and only
        # once every check passed: a refused value ("http://" as a server URL) must not become a secret that is cut out
        # of every later message.
        register_settings(self)

    def secret(self, name: str, provider: str) -> str:
        """The value of the secret field `name`; MissingCredential (FAILED_PRECONDITION) names its variable."""
        value: SecretStr = getattr(self, name)
        if not value.get_secret_value():
            raise MissingCredential(name.upper(), provider)
        return value.get_secret_value()


class NoSettings(ProviderSettings):
    """For providers that have no settings of their own."""


@dataclass(frozen=True)
class Price:
    """One line of a provider's price list: `usd_per_unit` for each `unit`, under the conditions in `note`."""

    model: str
    # What is counted, in words that follow "per": "image", "1M characters", "output second", "minute".
    unit: str
    usd_per_unit: float
    # What the price is for: "1024x1024 at standard quality", "GPU time on an L40S, about 0.25 s per step".
    note: str = ""


@dataclass(frozen=True)
class ProviderDescription:
    """What GetConfig shows about a provider besides its settings and prices."""

    name: str
    description: str
    offline: bool


SettingsT = TypeVar("SettingsT", bound=ProviderSettings)
JobT = TypeVar("JobT")


class Provider(Generic[SettingsT, JobT]):
    """A provider is built from its settings: `Provider(settings)`. A subclass declares:

    - `description`, and `settings_class` (its ProviderSettings subclass, shared by providers of one vendor);
    - `prices(settings)`, the price list GetConfig shows, and `estimate_usd(settings, job)`, what one job is expected
      to cost. There are no defaults: a provider that declares no price does not start (an offline provider declares
      0), so a forgotten price can never pass a budget check as $0;
    - `required_settings`: fields that must be set for it to work (GetConfig reports "configured" from them);
    - `output_settings`: fields that change what it makes (model versions, voices, base URLs). They go into the
      asset cache key, so changing one never returns an asset made under the old value. A tuple of field names on the
      provider rather than markers on the fields, because providers of one vendor share a settings class, and the
      registry checks every name at start-up, so a typo cannot silently drop a setting from the key.
    """

    description: ClassVar[ProviderDescription]
    settings_class: ClassVar[type[ProviderSettings]] = NoSettings
    required_settings: ClassVar[tuple[str, ...]] = ()
    output_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: SettingsT) -> None:
        self.settings = settings


@dataclass(frozen=True)
class ProviderSummary:
    """A provider as GetConfig lists it."""

    name: str
    description: str
    offline: bool
    required_env: tuple[str, ...]
    configured: bool
    prices: tuple[Price, ...]


ProviderT = TypeVar("ProviderT")


class ProviderRegistry(Generic[ProviderT]):
    """The providers of one media service, keyed by the name used in the service settings and in requests.

    Every provider's settings are built once, here, at start-up (or passed in: tests pass settings objects). The
    providers themselves are built on first use and kept, so a model loaded once serves every later request.
    """

    def __init__(
        self,
        providers: Iterable[type[Any]],
        default: str,
        variable: str,
        settings: Iterable[ProviderSettings] = (),
    ) -> None:
        """`default` comes from the service's settings (`variable` names it in messages); `settings` are settings
        objects to use instead of reading the environment, for the providers whose `settings_class` they are."""
        settings = tuple(settings)
        given = {type(value): value for value in settings}
        self._classes: dict[str, type[Any]] = {}
        self._settings: dict[str, ProviderSettings] = {}
        for provider in providers:
            name = provider.description.name
            _check_declared(provider)
            self._classes[name] = provider
            settings_class = provider.settings_class
            if settings_class not in given:
                given[settings_class] = settings_class()
            self._settings[name] = given[settings_class]
        unused = [type(value).__name__ for value in settings if value not in self._settings.values()]
        if unused:  # settings meant for another service's providers would otherwise be ignored without a word
            raise ValueError(f"no provider of this service takes {', '.join(unused)}")
        if default and default not in self._classes:
            raise ValueError(f"{variable}={default!r} is not a known provider; valid: {self.valid_names}")
        self._instances: dict[str, ProviderT] = {}
        self.default = default
        self.variable = variable

    def get(self, name: str, field: str) -> tuple[str, ProviderT]:
        """The named provider, or the default when `name` is empty; `field` names the request field."""
        chosen = self.resolve(name, field)
        if chosen not in self._instances:
            self._instances[chosen] = self._classes[chosen](self._settings[chosen])
        return chosen, self._instances[chosen]

    def resolve(self, name: str, field: str) -> str:
        """The name of the provider a request gets: `name`, else the default; INVALID_ARGUMENT when neither is valid."""
        chosen = name or self.default
        if not chosen:
            raise InvalidArgument(f"{field} is empty and {self.variable} is unset; name one of: {self.valid_names}")
        if chosen not in self._classes:
            source = field if name else self.variable
            raise InvalidArgument(f"{source}: unknown provider {quoted(chosen)}; valid: {self.valid_names}")
        return chosen

    def estimate_usd(self, name: str, job: object) -> float:
        """What `job` is expected to cost with the provider `name` (resolved), without building the provider."""
        return float(self._classes[name].estimate_usd(self._settings[name], job))

    def fingerprint(self, name: str) -> dict[str, str]:
        """The values of the provider's output settings, keyed by variable, for the asset cache key."""
        provider, settings = self._classes[name], self._settings[name]
        return {field.upper(): str(getattr(settings, field)) for field in provider.output_settings}

    def is_offline(self, name: str) -> bool:
        return bool(self._classes[name].description.offline)

    @property
    def valid_names(self) -> str:
        return ", ".join(sorted(self._classes))

    def summaries(self) -> list[ProviderSummary]:
        return [self._summary(name) for name in sorted(self._classes)]

    def _summary(self, name: str) -> ProviderSummary:
        provider, settings = self._classes[name], self._settings[name]
        description: ProviderDescription = provider.description
        return ProviderSummary(
            name=name,
            description=description.description,
            offline=description.offline,
            required_env=tuple(field.upper() for field in provider.required_settings),
            configured=all(_is_set(getattr(settings, field)) for field in provider.required_settings),
            prices=tuple(provider.prices(settings)),
        )


def _is_set(value: object) -> bool:
    return bool(value.get_secret_value() if isinstance(value, SecretStr) else value)


def _check_declared(provider: type[Any]) -> None:
    """Refuses a provider that declares no price, or output and required settings its settings do not have."""
    name = provider.description.name
    missing = [method for method in ("prices", "estimate_usd") if not callable(getattr(provider, method, None))]
    if missing:
        raise TypeError(
            f"provider {name!r} declares no price ({' and '.join(missing)}); every provider declares what a job "
            "costs, 0 for an offline one"
        )
    fields = provider.settings_class.model_fields
    unknown = [f for f in (*provider.output_settings, *provider.required_settings) if f not in fields]
    if unknown:
        raise TypeError(f"provider {name!r} names settings that {provider.settings_class.__name__} lacks: {unknown}")


def check_cost_cap(usd: float, field: str) -> None:
    """A spending cap is a finite number of dollars, 0 or more: NaN compares false with every cost, so a NaN cap
    (or a negative one, or infinity) would silently turn the budget check off."""
    if not math.isfinite(usd) or usd < 0:
        raise InvalidArgument(
            f"{field} must be a finite number of US dollars, 0 or more (0: the gateway's MAX_RENDER_COST_USD); "
            f"got {usd}"
        )

"""Plain descriptions of providers, shared by every media service's registry."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from services.common.errors import InvalidArgument, MissingCredential, quoted
from services.common.redact import register

ProviderT = TypeVar("ProviderT")


class Quality(str, Enum):
    """Quality asked of a provider; mirrors scenecast.v1.Quality without the protobuf dependency."""

    DRAFT = "draft"
    STANDARD = "standard"
    HD = "hd"


@dataclass(frozen=True)
class Price:
    model: str
    unit: str
    usd_per_unit: float
    note: str = ""


@dataclass(frozen=True)
class ProviderDescription:
    """What GetConfig shows about a provider."""

    name: str
    description: str
    offline: bool
    required_env: tuple[str, ...] = ()
    prices: tuple[Price, ...] = field(default_factory=tuple)

    @property
    def configured(self) -> bool:
        return all(os.environ.get(variable) for variable in self.required_env)


class ProviderRegistry(Generic[ProviderT]):
    """The providers of one media service, keyed by the name used in the environment and in requests.

    Providers are built on first use and kept, so a model loaded once serves every later request.
    """

    def __init__(self, providers: Sequence[Callable[[], ProviderT]], default: str, env_var: str) -> None:
        """`providers` are classes with a `description` attribute, built with no arguments on first use."""
        self._factories = {provider.description.name: provider for provider in providers}  # type: ignore[attr-defined]
        if default and default not in self._factories:
            raise ValueError(
                f"{env_var}={default!r} is not a known provider; valid: {', '.join(sorted(self._factories))}"
            )
        for provider in providers:
            for variable in provider.description.required_env:  # type: ignore[attr-defined]
                register(os.environ.get(variable, ""))
        self._instances: dict[str, ProviderT] = {}
        self.default = default
        self.env_var = env_var

    def get(self, name: str, field: str) -> tuple[str, ProviderT]:
        """Returns the named provider, or the default when `name` is empty; `field` names the request field.

        The default is read from the environment at request time, so a changed variable needs no code change; the
        value given at start-up (already validated) is the fallback.
        """
        chosen = name or self.current_default
        if not chosen:
            raise InvalidArgument(f"{field} is empty and {self.env_var} is unset; name one of: {self.valid_names}")
        if chosen not in self._factories:
            source = field if name else self.env_var
            raise InvalidArgument(f"{source}: unknown provider {quoted(chosen)}; valid: {self.valid_names}")
        if chosen not in self._instances:
            self._instances[chosen] = self._factories[chosen]()
        return chosen, self._instances[chosen]

    @property
    def current_default(self) -> str:
        return os.environ.get(self.env_var, self.default)

    @property
    def valid_names(self) -> str:
        return ", ".join(sorted(self._factories))

    def descriptions(self) -> list[ProviderDescription]:
        return [self._factories[name].description for name in sorted(self._factories)]  # type: ignore[attr-defined]


def require_env(variable: str, provider: str) -> str:
    """The value of a provider's secret, read at request time; never logged."""
    value = os.environ.get(variable, "")
    if not value:
        raise MissingCredential(variable, provider)
    register(value)  # a vendor may echo it in an error; registered before any request carries it
    return value

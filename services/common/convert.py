"""Plain provider values to and from protobuf messages, shared by the media servicers and the gateway."""

from __future__ import annotations

from scenecast.v1 import types_pb2

from services.common.providers import ProviderDescription, ProviderRegistry


def provider_set(kind: int, registry: ProviderRegistry[object]) -> types_pb2.ProviderSet:
    return types_pb2.ProviderSet(
        kind=kind,
        default_provider=registry.current_default,
        providers=[provider_info(description) for description in registry.descriptions()],
    )


def provider_info(description: ProviderDescription) -> types_pb2.ProviderInfo:
    return types_pb2.ProviderInfo(
        name=description.name,
        description=description.description,
        offline=description.offline,
        required_env=list(description.required_env),
        configured=description.configured,
        prices=[
            types_pb2.Price(model=p.model, unit=p.unit, usd_per_unit=p.usd_per_unit, note=p.note)
            for p in description.prices
        ],
    )

"""Plain provider values to and from protobuf messages, shared by the media servicers and the gateway."""

from __future__ import annotations

from scenecast.v1 import types_pb2

from services.common.providers import ProviderRegistry, ProviderSummary


def provider_set(kind: int, registry: ProviderRegistry[object]) -> types_pb2.ProviderSet:
    return types_pb2.ProviderSet(
        kind=kind,
        default_provider=registry.default,
        providers=[provider_info(summary) for summary in registry.summaries()],
    )


def provider_info(summary: ProviderSummary) -> types_pb2.ProviderInfo:
    return types_pb2.ProviderInfo(
        name=summary.name,
        description=summary.description,
        offline=summary.offline,
        required_env=list(summary.required_env),
        configured=summary.configured,
        prices=[
            types_pb2.Price(model=p.model, unit=p.unit, usd_per_unit=p.usd_per_unit, note=p.note)
            for p in summary.prices
        ],
    )

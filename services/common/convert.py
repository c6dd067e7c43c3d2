"""Plain provider values to and from protobuf messages, shared by the media servicers and the gateway."""

from __future__ import annotations

from scenecast.v1 import types_pb2

from services.common.errors import InvalidArgument
from services.common.providers import ProviderRegistry, ProviderSummary

# Jobs one Estimate*Cost call may price: far above any script (the gateway's MAX_SCENES), and a bound on the work.
MAX_ESTIMATES = 1000


def checked_count(count: int, field: str) -> None:
    if count > MAX_ESTIMATES:
        raise InvalidArgument(f"{field} has {count} entries; at most {MAX_ESTIMATES} per call, so split the call")


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

"""The contract's output enums by the names the provider tests' cases use."""

from __future__ import annotations

from scenecast.v1 import types_pb2

from services.common.providers import Quality

ASPECTS = {"16:9": types_pb2.ASPECT_RATIO_16_9, "9:16": types_pb2.ASPECT_RATIO_9_16, "1:1": types_pb2.ASPECT_RATIO_1_1}
QUALITIES = {
    Quality.DRAFT: types_pb2.QUALITY_DRAFT,
    Quality.STANDARD: types_pb2.QUALITY_STANDARD,
    Quality.HD: types_pb2.QUALITY_HD,
}

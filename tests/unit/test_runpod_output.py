"""Where a RunPod worker's output holds the clip, and what a job's reported times bill."""

from __future__ import annotations

from typing import Any

import pytest

from services.video.providers.runpod import billed_seconds, find_output

URL = "https://bucket.example/clip.mp4"


@pytest.mark.parametrize(
    ("output", "found"),
    [
        (URL, URL),
        ({"thumbnail_url": "https://bucket.example/t.jpg", "video_url": URL, "cost": 0.3}, URL),
        ({"result": {"files": ["https://bucket.example/a.png", {"video": URL}]}}, URL),
        (
            {"images": [{"filename": "c.mp4", "type": "base64", "data": "AAAA"}]},
            "data:application/octet-stream;base64,AAAA",
        ),
        ({"images": [{"filename": "c.mp4", "type": "s3_url", "data": URL}]}, URL),
        ({"message": "done", "path": "/tmp/clip.mp4"}, None),
        (None, None),
    ],
)
def test_the_clip_is_found_in_any_worker_shape(output: Any, found: str | None) -> None:
    assert find_output(output) == found


def test_billed_time_is_delay_plus_execution_rounded_up_to_seconds() -> None:
    assert billed_seconds({"delayTime": 1500, "executionTime": 12_300}) == 14
    assert billed_seconds({"executionTime": 2000}) == 2
    assert billed_seconds({}) == 0

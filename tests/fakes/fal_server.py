"""A fake Fal queue API for fal-ai/flux/dev (submit, status, result, cancel, CDN files), per docs/providers/fal.md."""

from __future__ import annotations

import asyncio
import io
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from PIL import Image

from tests.fakes.base import FakeServer
from tests.fakes.replicate_server import GARBAGE

KEY = "fal-key-id:fal-key-secret-for-tests"
APP = "/fal-ai/flux"
SUBMIT = f"{APP}/dev"
PRESETS = ("square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9")
# Fal's infrastructure error for a runner that went away (docs: request-errors).
RUNNER_ERROR = "runner_disconnected"


@dataclass
class FakeRequest:
    id: str
    input: dict[str, Any]
    polls: int = 0
    status: str = "IN_QUEUE"


class FakeFal(FakeServer):
    """Requests go IN_QUEUE -> IN_PROGRESS -> COMPLETED over `polls_to_finish` status checks.

    Knobs (restored by reset()): `polls_to_finish`, `fail_with` (a COMPLETED status carrying this error),
    `nsfw` (has_nsfw_concepts true), `garbage_output` (the file is noise under image/png), `answer_delay` (a submit
    queues its request, then answers this many seconds late). 429s and 5xx come from `add_fault`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, FakeRequest] = {}
        self._defaults()

    def _defaults(self) -> None:
        self.polls_to_finish = 1
        self.fail_with: str | None = None
        self.nsfw = False
        self.garbage_output = False
        self.answer_delay = 0.0

    def reset(self) -> None:
        super().reset()
        self.jobs.clear()
        self._defaults()

    def submits(self) -> list[Any]:
        return self.requests_to(SUBMIT, "POST")

    def status_checks(self) -> list[Any]:
        return [r for r in self.requests_to(f"{APP}/requests/", "GET") if r.path.endswith("/status")]

    def cancels(self) -> list[Any]:
        return self.requests_to(f"{APP}/requests/", "PUT")

    def routes(self, app: web.Application) -> None:
        app.router.add_post(SUBMIT, self._submit)
        app.router.add_get(APP + "/requests/{id}/status", self._status)
        app.router.add_get(APP + "/requests/{id}", self._result)
        app.router.add_put(APP + "/requests/{id}/cancel", self._cancel)
        app.router.add_get("/files/{id}.png", self._file)

    def _denied(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Key {KEY}":
            return web.json_response({"detail": "Unauthorized: invalid or missing API key"}, status=401)
        return None

    async def _submit(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        if problems := _problems(body):
            return web.json_response({"detail": problems}, status=422, headers={"X-Fal-Retryable": "false"})
        job = FakeRequest(str(uuid.uuid4()), body)
        self.jobs[job.id] = job
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)  # queued, but the answer comes late
        base = f"{self.base_url}{APP}/requests/{job.id}"
        return web.json_response(
            {"request_id": job.id, "response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}
        )

    def _job(self, request: web.Request) -> FakeRequest | None:
        return self.jobs.get(request.match_info["id"])

    async def _status(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        if (job := self._job(request)) is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        if job.status != "CANCELLED":
            job.polls += 1
            job.status = "COMPLETED" if job.polls >= self.polls_to_finish else "IN_PROGRESS"
        answer: dict[str, Any] = {"status": job.status, "request_id": job.id}
        if job.status == "IN_QUEUE":
            answer["queue_position"] = 0
        if job.status == "COMPLETED" and self.fail_with:
            answer |= {"error": self.fail_with, "error_type": RUNNER_ERROR}
        return web.json_response(answer, status=200 if job.status == "COMPLETED" else 202)

    async def _result(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        if (job := self._job(request)) is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        if job.status != "COMPLETED":
            return web.json_response({"detail": "Request is still in progress"}, status=400)
        if self.fail_with:
            return web.json_response({"detail": self.fail_with, "error_type": RUNNER_ERROR}, status=503)
        size = job.input["image_size"]
        return web.json_response(
            {
                "images": [
                    {
                        "url": f"{self.base_url}/files/{job.id}.png",
                        "width": size["width"],
                        "height": size["height"],
                        "content_type": "image/png",
                    }
                ],
                "seed": 42,
                "has_nsfw_concepts": [self.nsfw],
                "prompt": job.input["prompt"],
                "timings": {"inference": 1.2},
            }
        )

    async def _cancel(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        if (job := self._job(request)) is None:
            return web.json_response({"status": "NOT_FOUND"}, status=404)
        if job.status == "COMPLETED":
            return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)
        job.status = "CANCELLED"
        return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)

    async def _file(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.Response(status=404)
        if self.garbage_output:
            return web.Response(body=GARBAGE, content_type="image/png")
        size = job.input["image_size"]
        buffer = io.BytesIO()
        colour = (0, 0, 0) if self.nsfw else (200, 120, 40)  # the safety checker's black image
        Image.new("RGB", (size["width"], size["height"]), colour).save(buffer, "PNG")
        return web.Response(body=buffer.getvalue(), content_type="image/png")


def _problems(body: dict[str, Any]) -> list[dict[str, Any]]:
    """422 details as Fal writes them (`loc`, `msg`, `type`), for the documented flux/dev input."""
    problems = []

    def problem(field: str, msg: str, kind: str = "value_error") -> None:
        problems.append({"loc": ["body", field], "msg": msg, "type": kind})

    if not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
        problem("prompt", "field required", "missing")
    elif "forbidden" in body["prompt"]:
        problem(
            "prompt",
            "The content could not be processed because it contained material flagged by a content checker.",
            "content_policy_violation",
        )
    size = body.get("image_size", "landscape_4_3")
    if isinstance(size, dict):
        if not all(isinstance(size.get(side), int) and 0 < size[side] <= 14142 for side in ("width", "height")):
            problem("image_size", "width and height must be positive integers")
    elif size not in PRESETS:
        problem("image_size", f"must be one of {', '.join(PRESETS)} or {{width, height}}")
    if not 1 <= body.get("num_inference_steps", 28) <= 50:
        problem("num_inference_steps", "ensure this value is between 1 and 50")
    if not 1 <= body.get("num_images", 1) <= 4:
        problem("num_images", "ensure this value is between 1 and 4")
    if body.get("output_format", "jpeg") not in ("jpeg", "png"):
        problem("output_format", "must be jpeg or png")
    return problems

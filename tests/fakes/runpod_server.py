"""A fake RunPod serverless API (`/v2/{endpoint}/run`, `/status/{id}`, `/cancel/{id}`) running a video worker, as
docs/providers/runpod.md describes it, with the clip served from this server as a bucket would serve it."""

from __future__ import annotations

import base64
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer, RecordedRequest
from tests.fakes.video_servers import corrupt, make_clip

API_KEY = "rp_test_0123456789"
ENDPOINT_ID = "abc123xyz"
# What the fake reports a job took, in milliseconds (RunPod's `delayTime` and `executionTime`).
DELAY_MS = 1500
EXECUTION_MS = 12_300


@dataclass
class RunPodJob:
    id: str
    input: dict[str, Any]
    polls: int = 0
    status: str = "IN_QUEUE"


class FakeRunPod(FakeServer):
    """Knobs (restored by reset()): `polls_to_finish` (status checks before COMPLETED), `fail_with` (the job ends
    FAILED with this error), `corrupt_output` (the clip's bytes are not a video), `output_shape` ("video_url" as
    RunPod's hosted models answer, "comfyui" as worker-comfyui answers with base64, "string" a bare URL). A 429, a
    5xx or a slow /run come from Faults (tests.fakes.base); a wrong key gets 401, an unknown endpoint 404."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, RunPodJob] = {}
        self._jobs_lock = threading.Lock()
        self._defaults()

    def _defaults(self) -> None:
        self.polls_to_finish = 2
        self.fail_with: str | None = None
        self.corrupt_output = False
        self.output_shape = "video_url"

    def reset(self) -> None:
        super().reset()
        with self._jobs_lock:
            self.jobs.clear()
        self._defaults()

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v2"

    def runs(self) -> list[RecordedRequest]:
        return [r for r in self.requests_to("/v2/", "POST") if r.path.endswith("/run")]

    def cancels(self) -> list[RecordedRequest]:
        return [r for r in self.requests_to("/v2/", "POST") if "/cancel/" in r.path]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/{endpoint}/run", self._run)
        app.router.add_get("/v2/{endpoint}/status/{id}", self._status)
        app.router.add_post("/v2/{endpoint}/cancel/{id}", self._cancel)
        app.router.add_get("/bucket/{id}.mp4", self._file)

    def _refusal(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.Response(status=401, text="Unauthorized")
        if request.match_info["endpoint"] != ENDPOINT_ID:
            return web.json_response({"error": "endpoint not found"}, status=404)
        return None

    async def _run(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return web.json_response({"error": "input is required and must be an object"}, status=400)
        job = RunPodJob(id=f"{uuid.uuid4()}-u1", input=body["input"])
        with self._jobs_lock:
            self.jobs[job.id] = job
        return web.json_response({"id": job.id, "status": job.status})

    async def _status(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        with self._jobs_lock:
            job = self.jobs.get(request.match_info["id"])
            if job is None:
                return web.json_response({"error": "job not found"}, status=404)
            if job.status in ("IN_QUEUE", "IN_PROGRESS"):
                job.polls += 1
                job.status = "IN_PROGRESS"
                if job.polls >= self.polls_to_finish:
                    job.status = "FAILED" if self.fail_with else "COMPLETED"
            answer: dict[str, Any] = {"id": job.id, "status": job.status}
        if job.status in ("COMPLETED", "FAILED"):
            answer.update(delayTime=DELAY_MS, executionTime=EXECUTION_MS, workerId="worker-1")
        if job.status == "FAILED":
            answer["error"] = self.fail_with
        if job.status == "COMPLETED":
            answer["output"] = self._output(job)
        return web.json_response(answer)

    def _output(self, job: RunPodJob) -> Any:
        url = f"{self.base_url}/bucket/{job.id}.mp4"
        if self.output_shape == "string":
            return url
        if self.output_shape == "comfyui":
            data = base64.b64encode(self._clip(job)).decode()
            return {"images": [{"filename": "clip.mp4", "type": "base64", "data": data}]}
        return {"video_url": url, "thumbnail_url": f"{self.base_url}/bucket/thumb.jpg", "cost": 0.3}

    def _clip(self, job: RunPodJob) -> bytes:
        # The built-in template's fields; a custom template's worker makes a small default clip.
        inputs = job.input
        size = int(inputs.get("width", 256)), int(inputs.get("height", 144))
        clip = make_clip(*size, int(inputs.get("num_frames", 9)), int(inputs.get("fps", 24)))
        return corrupt(clip) if self.corrupt_output else clip

    async def _file(self, request: web.Request) -> web.Response:
        with self._jobs_lock:
            job = self.jobs.get(request.match_info["id"])
        if job is None or job.status != "COMPLETED":
            return web.Response(status=404, text="NoSuchKey")
        return web.Response(body=self._clip(job), content_type="video/mp4")

    async def _cancel(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        with self._jobs_lock:
            job = self.jobs.get(request.match_info["id"])
            if job is None:
                return web.json_response({"error": "job not found"}, status=404)
            job.status = "CANCELLED"
        return web.json_response({"id": job.id, "status": "CANCELLED"})

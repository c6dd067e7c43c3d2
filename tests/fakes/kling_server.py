"""A fake Kling API (JWT auth, text2video and image2video tasks, polling, MP4 files), per docs/providers/kling.md."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from PIL import Image, UnidentifiedImageError

from tests.fakes.base import FakeServer
from tests.fakes.video_servers import corrupt, make_clip

ACCESS_KEY = "kling-access-key-for-tests"
SECRET_KEY = "kling-secret-key-for-tests-0123456789abcdef"  # 32+ bytes, as HS256 wants
MODELS = ("kling-v1", "kling-v1-6", "kling-v2-1", "kling-v2-5-turbo", "kling-v2-master", "kling-v2-1-master")
ASPECT_SIZES = {"16:9": (640, 360), "9:16": (360, 640), "1:1": (360, 360)}
FPS = 24
REFUSAL = "Failure to pass the risk control system"
THROTTLED = {"code": 1302, "message": "The API request is too fast, please slow down the request frequency."}


@dataclass
class FakeTask:
    id: str
    kind: str
    body: dict[str, Any]
    external_task_id: str
    size: tuple[int, int]
    polls: int = 0
    status: str = "submitted"


class FakeKling(FakeServer):
    """Tasks go submitted -> processing -> succeed over `polls_to_finish` GETs.

    Knobs (restored by reset()): `polls_to_finish`, `fail_with` (a failed task's task_status_msg), `garbage_output`
    (the MP4 lost its header), `answer_delay` (a create makes its task, then answers this many seconds late).
    429s and 5xx come from `add_fault`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[str, FakeTask] = {}
        self._clips: dict[tuple[int, int, int], bytes] = {}
        self._defaults()

    def _defaults(self) -> None:
        self.polls_to_finish = 1
        self.fail_with: str | None = None
        self.garbage_output = False
        self.answer_delay = 0.0

    def reset(self) -> None:
        super().reset()
        self.tasks.clear()
        self._defaults()

    def creates(self) -> list[Any]:
        return self.requests_to("/v1/videos/", "POST")

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/videos/{kind}", self._create)
        app.router.add_get("/v1/videos/{kind}/{id}", self._get)
        app.router.add_get("/files/{id}.mp4", self._file)

    def _denied(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            claims = jwt.decode(token, SECRET_KEY, algorithms=["HS256"], options={"require": ["iss", "exp", "nbf"]})
        except jwt.ExpiredSignatureError:
            return _error(401, 1004, "Authorization token has expired")
        except jwt.InvalidTokenError:
            return _error(401, 1002, "Authorization is invalid")
        if scheme != "Bearer" or claims["iss"] != ACCESS_KEY:
            return _error(401, 1002, "Authorization is invalid")
        if claims["exp"] - time.time() > 3600:
            return _error(401, 1002, "Authorization token lives too long")
        return None

    async def _create(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        kind = request.match_info["kind"]
        if kind not in ("text2video", "image2video"):
            return _error(404, 1203, f"Unknown endpoint {kind}")
        body = await request.json()
        if problem := _problem(kind, body):
            return _error(400, 1201, problem)
        if "forbidden" in body["prompt"]:
            return _error(400, 1301, REFUSAL)
        external = body.get("external_task_id") or ""
        if external and any(t.external_task_id == external for t in self.tasks.values()):
            return _error(400, 1201, "external_task_id already exists")
        size = ASPECT_SIZES[body.get("aspect_ratio", "16:9")] if kind == "text2video" else ASPECT_SIZES["16:9"]
        task = FakeTask(str(uuid.uuid4()), kind, body, external, size)
        self.tasks[task.id] = task
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)  # made, but the answer comes late
        return _ok(self._data(task))

    async def _get(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        wanted = request.match_info["id"]
        task = next((t for t in self.tasks.values() if wanted in (t.id, t.external_task_id)), None)
        if task is None or task.kind != request.match_info["kind"]:
            return _error(404, 1203, "Task not found")
        task.polls += 1
        if task.polls >= self.polls_to_finish:
            task.status = "failed" if self.fail_with else "succeed"
        else:
            task.status = "processing"
        return _ok(self._data(task))

    def _data(self, task: FakeTask) -> dict[str, Any]:
        now = int(time.time() * 1000)
        data: dict[str, Any] = {
            "task_id": task.id,
            "task_status": task.status,
            "task_info": {"external_task_id": task.external_task_id},
            "created_at": now,
            "updated_at": now,
        }
        if task.status == "failed":
            data["task_status_msg"] = self.fail_with
        if task.status == "succeed":
            url = f"{self.base_url}/files/{task.id}.mp4"
            data["task_result"] = {"videos": [{"id": task.id, "url": url, "duration": task.body["duration"]}]}
            data["final_unit_deduction"] = "1"
        return data

    async def _file(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return web.Response(status=404)
        key = (*task.size, int(task.body["duration"]))
        if key not in self._clips:
            self._clips[key] = await asyncio.to_thread(make_clip, task.size[0], task.size[1], key[2] * FPS, FPS)
        data = corrupt(self._clips[key]) if self.garbage_output else self._clips[key]
        return web.Response(body=data, content_type="video/mp4")


def _ok(data: dict[str, Any]) -> web.Response:
    return web.json_response({"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data})


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message, "request_id": str(uuid.uuid4())}, status=status)


def _problem(kind: str, body: dict[str, Any]) -> str:
    """The documented checks of a create, as one message (Kling answers code 1201 for a bad parameter)."""
    if body.get("model_name", "kling-v1") not in MODELS:
        return f"model_name must be one of {', '.join(MODELS)}"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt or len(prompt) > 2500:
        return "prompt is required and at most 2500 characters"
    if body.get("mode", "std") not in ("std", "pro"):
        return "mode must be std or pro"
    if body.get("duration", "5") not in ("5", "10"):
        return "duration must be the string 5 or 10"
    if kind == "text2video" and body.get("aspect_ratio", "16:9") not in ASPECT_SIZES:
        return "aspect_ratio must be 16:9, 9:16 or 1:1"
    if kind == "image2video":
        image = body.get("image")
        if not isinstance(image, str) or image.startswith("data:"):
            return "image is required, as a URL or raw base64 without a data: prefix"
        try:
            with Image.open(io.BytesIO(base64.b64decode(image, validate=True))) as picture:
                if min(picture.size) < 300:
                    return "image sides must be at least 300 px"
        except (binascii.Error, UnidentifiedImageError):
            return "image is not a jpg or png"
    return ""

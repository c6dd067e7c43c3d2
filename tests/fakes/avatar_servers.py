"""Fake Synthesia v2 and HeyGen v3 (and legacy v2/v1) APIs that render real talking-head stand-in MP4s with FFmpeg.

Both follow providers.md section 7 and providers-2.md section 5: paths, auth headers, bodies, error bodies, status
progression, Synthesia's video list and HeyGen v3's idempotency keys. A finished
video is a coloured picture with a "head" and a tone whose length is MS_PER_CHAR per character of narration, served
from the fake's own /files/ path, as the vendors serve pre-signed download links.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import struct
import subprocess
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import imageio_ffmpeg
from aiohttp import web

from tests.fakes.base import RecordedRequest, VideoFilesServer

SYNTHESIA_KEY = "synthesia-fake-key"
HEYGEN_KEY = "heygen-fake-key"
# Length of the stand-in voice per character of narration, in milliseconds.
MS_PER_CHAR = 60
# Longest side of the stand-in pictures, in pixels: small, so encoding stays fast.
PICTURE_SIDE = 320
# What a corrupt download holds: an MP4 signature followed by noise.
CORRUPT_MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 16
SYNTHESIA_ASPECTS = ("16:9", "9:16", "1:1", "4:5", "5:4")
HEYGEN_PLAN_ERROR = {
    "code": 40010,
    "message": "Video format not supported",
    "detail": "Please subscribe to higher plan to generate higher resolution videos",
}

Problems = list[str]


def spoken_ms(narrations: Iterable[str]) -> int:
    """The length of the stand-in voice for these narrations: what a finished video's audio measures."""
    return MS_PER_CHAR * sum(len(text) for text in narrations)


def talking_head_command(exe: str, size: tuple[int, int], milliseconds: int, audio: bool, output: Path) -> list[str]:
    width, height = size
    seconds = f"{milliseconds / 1000:.3f}"
    picture = [
        "-f",
        "lavfi",
        "-i",
        f"color=c=0x3b5b7a:s={width}x{height}:r=10:d={seconds},"
        "drawbox=x=iw*0.4:y=ih*0.2:w=iw*0.2:h=ih*0.45:color=0xe0b089:t=fill",
    ]
    voice = ["-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=24000:duration={seconds}"] if audio else []
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    codecs += ["-c:a", "aac", "-b:a", "48k"] if audio else ["-an"]
    return [exe, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *picture, *voice, *codecs, str(output)]


@functools.lru_cache(maxsize=64)
def talking_head(size: tuple[int, int], milliseconds: int, audio: bool = True) -> bytes:
    """A real H.264/AAC MP4, cached per input so repeated test videos cost one encode."""
    with tempfile.TemporaryDirectory(prefix="fake-avatar-") as tmp:
        output = Path(tmp) / "head.mp4"
        command = talking_head_command(imageio_ffmpeg.get_ffmpeg_exe(), size, milliseconds, audio, output)
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        return output.read_bytes()


@dataclass
class FakeVideo:
    id: str
    # The create request's JSON body.
    body: dict[str, Any]
    narrations: tuple[str, ...]
    # Size of the stand-in picture.
    size: tuple[int, int]
    status: str
    polls: int = 0
    url: str | None = None
    seconds: float | None = None
    error: dict[str, Any] | None = None
    history: list[str] = field(default_factory=list)  # every status served, in order


class _FakeAvatarVendor(VideoFilesServer):
    """What both vendors share: knobs, the video table, status progression and the served files.

    Knobs (restored by reset()): `polls_to_finish` (status checks a video stays unfinished; 0 finishes it at create),
    `fail_with` (the render fails with this message), `throttle_creates` (that many creates answer 429 with
    `retry_after` in the Retry-After header), `corrupt_video` (the file is not media), `silent_video` (no audio track),
    `padding_bytes` (the file ends with a `free` box of that many bytes: as large as a long video, encoded at once),
    `answer_delay` (a create orders its video, then answers this many seconds late), `failing_downloads` (that many
    file downloads answer 503).
    """

    create_path = ""
    status_path = ""
    # The status a new video has, the one it has once a status check saw it rendering, and the one when done.
    in_progress = ""
    rendering = ""
    completed = ""

    def __init__(self) -> None:
        super().__init__()
        self.videos: dict[str, FakeVideo] = {}
        self._defaults()

    def _defaults(self) -> None:
        self.polls_to_finish = 1
        self.fail_with: str | None = None
        self.throttle_creates = 0
        self.retry_after = "1"
        self.corrupt_video = False
        self.silent_video = False
        self.padding_bytes = 0
        self.answer_delay = 0.0

    def reset(self) -> None:
        super().reset()
        self.videos.clear()
        self._defaults()

    def creates(self) -> list[RecordedRequest]:
        return self.requests_to(self.create_path, "POST")

    def status_checks(self) -> list[RecordedRequest]:
        return self.requests_to(self.status_path, "GET")

    async def _late(self) -> None:
        """The order is taken; the answer may come after the client stopped waiting."""
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)

    def _throttled(self) -> bool:
        if self.throttle_creates <= 0:
            return False
        self.throttle_creates -= 1
        return True

    def _new_video(self, body: dict[str, Any], narrations: tuple[str, ...], size: tuple[int, int]) -> FakeVideo:
        video = FakeVideo(uuid.uuid4().hex, body, narrations, size, self.in_progress)
        self.videos[video.id] = video
        return video

    async def _advance(self, video: FakeVideo, counted: bool) -> None:
        """Counts a status check (when `counted`) and finishes the video once enough checks were made."""
        if video.status in (self.in_progress, self.rendering):
            video.polls += int(counted)
            if video.polls >= self.polls_to_finish:
                await self._finish(video)
            elif counted:
                video.status = self.rendering
        video.history.append(video.status)

    async def _finish(self, video: FakeVideo) -> None:
        failure = self._failure(video)
        if failure is not None:
            video.status, video.error = failure
            return
        milliseconds = spoken_ms(video.narrations)
        if self.corrupt_video:
            data = CORRUPT_MP4
        else:
            data = await asyncio.to_thread(talking_head, video.size, milliseconds, not self.silent_video)
            if self.padding_bytes:
                # An MP4 box: 32-bit size (its 8-byte header included), type, content; players skip `free` boxes.
                data += struct.pack(">I4s", self.padding_bytes + 8, b"free") + bytes(self.padding_bytes)
        self.files[f"{video.id}.mp4"] = data
        video.url = f"{self.base_url}/files/{video.id}.mp4"
        video.seconds = milliseconds / 1000
        video.status = self.completed

    def _failure(self, video: FakeVideo) -> tuple[str, dict[str, Any]] | None:
        """The failed status and its error fields, when a knob says the render fails."""
        raise NotImplementedError


class FakeSynthesia(_FakeAvatarVendor):
    """Synthesia v2: POST /v2/videos, GET /v2/videos/{id}; videos go in_progress -> complete | error | rejected.

    Extra knob: `reject_with` (moderation rejects the video with this reason).
    """

    create_path = "/v2/videos"
    status_path = "/v2/videos/"
    in_progress = "in_progress"
    rendering = "in_progress"
    completed = "complete"

    def __init__(self) -> None:
        super().__init__()
        self.api_key = SYNTHESIA_KEY

    def _defaults(self) -> None:
        super()._defaults()
        self.reject_with: str | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/videos", self._create)
        app.router.add_get("/v2/videos", self._list)
        app.router.add_get("/v2/videos/{id}", self._get)
        app.router.add_get("/files/{name}", self._file)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        if self._throttled():
            return _synthesia_error(
                429, "Too Many Requests", "Rate limit exceeded: 60 videos per minute", {"Retry-After": self.retry_after}
            )
        body = _json_body(await request.read())
        problems = _check_synthesia(body)
        if problems:
            return _synthesia_error(400, "Bad Request", "; ".join(problems))
        aspect = body.get("aspectRatio", "16:9")
        narrations = tuple(item.get("scriptText", "") for item in body["input"])
        video = self._new_video(body, narrations, _aspect_size(aspect))
        await self._advance(video, counted=False)
        await self._late()
        return web.json_response(self._json(video))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        """`limit` (1-100, default 20) videos from `offset`, newest first, and the `nextOffset` to read on from."""
        if (denied := self._denied(request)) is not None:
            return denied
        limit = min(100, max(1, int(request.query.get("limit", "20"))))
        offset = max(0, int(request.query.get("offset", "0")))
        newest_first = list(reversed(self.videos.values()))
        answer: dict[str, Any] = {"videos": [self._json(video) for video in newest_first[offset : offset + limit]]}
        if offset + limit < len(newest_first):
            answer["nextOffset"] = offset + limit
        return web.json_response(answer)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        video = self.videos.get(request.match_info["id"])
        if video is None:
            return _synthesia_error(404, "Not Found", "Video ID was not found.")
        await self._advance(video, counted=True)
        return web.json_response(self._json(video))

    def _failure(self, video: FakeVideo) -> tuple[str, dict[str, Any]] | None:
        if self.reject_with is not None:
            return "rejected", {"error": self.reject_with}
        if self.fail_with is not None:
            return "error", {"error": self.fail_with}
        return None

    def _json(self, video: FakeVideo) -> dict[str, Any]:
        body = video.body
        answer: dict[str, Any] = {
            "id": video.id,
            "title": body.get("title", ""),
            "description": body.get("description", ""),
            "visibility": body.get("visibility", "private"),
            "aspectRatio": body.get("aspectRatio", "16:9"),
            "test": body.get("test", False),
            "input": body["input"],
            "status": video.status,
            "createdAt": 1764000000,
            "lastUpdatedAt": 1764000000 + video.polls,
        }
        if "callbackId" in body:
            answer["callbackId"] = body["callbackId"]
        if video.status == "complete":
            # The spec types `duration` as a string; "0:00:02.340000" (Python's timedelta) is our guess at its form.
            answer["download"] = video.url
            answer["duration"] = str(timedelta(seconds=video.seconds or 0))
            answer["thumbnail"] = {"image": None, "gif": None}
        answer.update(video.error or {})
        return answer

    def _denied(self, request: web.Request) -> web.Response | None:
        # The bare key, no "Bearer": a wrong or missing key gets 403, as the spec says.
        if request.headers.get("Authorization") != self.api_key:
            return _synthesia_error(403, "Forbidden", "Wrong API key")
        return None


class FakeHeyGen(_FakeAvatarVendor):
    """HeyGen v3: POST /v3/videos (with Idempotency-Key), GET /v3/videos/{id}; and the legacy v2 create with v1
    status. Videos go pending -> processing -> completed | failed.

    Extra knobs: `fail_code` (the failed video's error code), `plan_max_side` (a v2 dimension above it fails with
    40010), `version` ("v3" or "v2": which API `creates()` and `status_checks()` report).
    """

    V3_CREATE = "/v3/videos"
    V3_STATUS = "/v3/videos/"
    V2_CREATE = "/v2/video/generate"
    V2_STATUS = "/v1/video_status.get"
    in_progress = "pending"
    rendering = "processing"
    completed = "completed"

    def __init__(self) -> None:
        super().__init__()
        self.api_key = HEYGEN_KEY

    def _defaults(self) -> None:
        super()._defaults()
        self.fail_code: Any = 400140
        self.plan_max_side: int | None = None
        self.version = "v3"
        # Idempotency-Key -> the answer given to its first order (None while that order is being taken).
        self.answers: dict[str, web.Response | None] = {}

    @property
    def create_path(self) -> str:  # type: ignore[override]
        return self.V3_CREATE if self.version == "v3" else self.V2_CREATE

    @property
    def status_path(self) -> str:  # type: ignore[override]
        return self.V3_STATUS if self.version == "v3" else self.V2_STATUS

    def creates(self) -> list[RecordedRequest]:
        # Exactly the create path: /v3/videos/{id} status checks share its prefix.
        return [r for r in self.requests_to(self.create_path, "POST") if r.path == self.create_path]

    def routes(self, app: web.Application) -> None:
        app.router.add_post(self.V3_CREATE, self._create_v3)
        app.router.add_get(self.V3_STATUS + "{id}", self._status_v3)
        app.router.add_post(self.V2_CREATE, self._create)
        app.router.add_get(self.V2_STATUS, self._status)
        app.router.add_get("/files/{name}", self._file)

    async def _create_v3(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Api-Key") != self.api_key:
            return _heygen_v3_error(401, "unauthorized", "Invalid API key")
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            if not re.fullmatch(r"[A-Za-z0-9_:.\-]{1,255}", key):
                return _heygen_v3_error(400, "invalid_parameter", "Idempotency-Key: 1-255 of [A-Za-z0-9_:.-]")
            if key in self.answers:
                answer = self.answers[key]
                if answer is None:
                    return _heygen_v3_error(409, "request_in_progress", "A request with this key is in progress")
                # Replayed: no second video.
                return web.Response(body=answer.body, status=answer.status, headers=answer.headers)
            self.answers[key] = None
        response = await self._order_v3(request)
        if key is not None:
            self.answers[key] = response
        return response

    async def _order_v3(self, request: web.Request) -> web.Response:
        if self._throttled():
            return _heygen_v3_error(
                429, "rate_limit_exceeded", "Too many requests, please retry later", {"Retry-After": self.retry_after}
            )
        body = _json_body(await request.read())
        problems = _check_heygen_v3(body)
        if problems:
            return _heygen_v3_error(400, "invalid_parameter", "; ".join(problems))
        width, height = _aspect_size(body.get("aspect_ratio", "16:9"))
        video = self._new_video(body, (body["script"],), (width, height))
        await self._advance(video, counted=False)
        await self._late()
        return web.json_response({"data": {"video_id": video.id, "status": video.status, "output_format": "mp4"}})

    async def _status_v3(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Api-Key") != self.api_key:
            return _heygen_v3_error(401, "unauthorized", "Invalid API key")
        video = self.videos.get(request.match_info["id"])
        if video is None:
            return _heygen_v3_error(404, "not_found", "Video not found")
        await self._advance(video, counted=True)
        error = video.error or {}
        return web.json_response(
            {
                "data": {
                    "id": video.id,
                    "title": video.body.get("title"),
                    "status": video.status,
                    "video_url": video.url,
                    "thumbnail_url": None,
                    "duration": video.seconds,
                    "failure_code": error.get("code"),
                    "failure_message": error.get("message"),
                    "created_at": 1764000000,
                    "completed_at": 1764000000 + video.polls if video.status == "completed" else None,
                }
            }
        )

    async def _create(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Api-Key") != self.api_key:
            return _heygen_v2_error(401, 400112, "Unauthorized")
        if self._throttled():
            return _heygen_v2_error(
                429, "rate_limit_exceeded", "Too many requests, please retry later", {"Retry-After": self.retry_after}
            )
        body = _json_body(await request.read())
        problems = _check_heygen(body)
        if problems:
            return _heygen_v2_error(400, "invalid_parameter", "; ".join(problems))
        dimension = body.get("dimension") or {"width": 1280, "height": 720}
        narrations = tuple(item["voice"]["input_text"] for item in body["video_inputs"])
        video = self._new_video(body, narrations, _scaled((dimension["width"], dimension["height"])))
        await self._advance(video, counted=False)
        await self._late()
        return web.json_response({"error": None, "data": {"video_id": video.id}})

    async def _status(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Api-Key") != self.api_key:
            return web.json_response({"code": 400112, "message": "Unauthorized", "data": None}, status=401)
        video = self.videos.get(request.query.get("video_id", ""))
        if video is None:
            return web.json_response({"code": 400116, "message": "Video not found", "data": None}, status=404)
        await self._advance(video, counted=True)
        return web.json_response(
            {
                "code": 100,
                "message": "Success",
                "data": {
                    "id": video.id,
                    "status": video.status,
                    "video_url": video.url,
                    "thumbnail_url": None,
                    "gif_url": None,
                    "caption_url": None,
                    "duration": video.seconds,
                    "callback_id": video.body.get("callback_id"),
                    "error": video.error,
                },
            }
        )

    def _failure(self, video: FakeVideo) -> tuple[str, dict[str, Any]] | None:
        dimension = video.body.get("dimension") or {"width": 1, "height": 1}
        if self.plan_max_side is not None and max(dimension["width"], dimension["height"]) > self.plan_max_side:
            return "failed", dict(HEYGEN_PLAN_ERROR)
        if self.fail_with is not None:
            return "failed", {"code": self.fail_code, "message": self.fail_with, "detail": None}
        return None


def _json_body(raw: bytes) -> Any:
    # The base server's middleware has already read the body; aiohttp caches it, so this read is free.
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return None


def _synthesia_error(status: int, error: str, context: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error, "context": context}, status=status, headers=headers)


def _heygen_v2_error(status: int, code: Any, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"data": None, "error": {"code": code, "message": message}}, status=status, headers=headers
    )


def _heygen_v3_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "doc_url": "https://developers.heygen.com/docs/error-codes"}}
    return web.json_response(body, status=status, headers=headers)


def _aspect_size(aspect: str) -> tuple[int, int]:
    width, height = (int(part) for part in aspect.split(":"))
    return _scaled((width, height))


def _scaled(size: tuple[int, int]) -> tuple[int, int]:
    """The size scaled so its long side is PICTURE_SIDE, kept even."""
    scale = PICTURE_SIDE / max(size)
    return max(2, round(size[0] * scale / 2) * 2), max(2, round(size[1] * scale / 2) * 2)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_synthesia(body: Any) -> Problems:
    """The create body's documented rules: input[1..25] with avatar and background, and a script per scene."""
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    problems: Problems = []
    scenes = body.get("input")
    if not isinstance(scenes, list) or not 1 <= len(scenes) <= 25:
        problems.append("input: must be a list of 1 to 25 scenes")
        scenes = []
    for index, scene in enumerate(scenes):
        if not isinstance(scene, dict):
            problems.append(f"input.{index}: must be an object")
            continue
        for key in ("avatar", "background"):
            if not _text(scene.get(key)):
                problems.append(f"input.{index}.{key}: field required")
        if not _text(scene.get("scriptText")) and not (scene.get("scriptAudio") and scene.get("scriptLanguage")):
            problems.append(f"input.{index}: scriptText, or scriptAudio with scriptLanguage, is required")
        settings = scene.get("avatarSettings", {})
        if not isinstance(settings, dict) or not isinstance(settings.get("voice", ""), str):
            problems.append(f"input.{index}.avatarSettings: voice must be a string")
        elif settings.get("style", "rectangular") not in ("rectangular", "circular", "voiceOnly"):
            problems.append(f"input.{index}.avatarSettings.style: not a valid choice")
    if body.get("aspectRatio", "16:9") not in SYNTHESIA_ASPECTS:
        problems.append(f"aspectRatio: must be one of {', '.join(SYNTHESIA_ASPECTS)}")
    if body.get("visibility", "private") not in ("private", "public"):
        problems.append("visibility: must be private or public")
    if not isinstance(body.get("test", False), bool):
        problems.append("test: must be a boolean")
    if not isinstance(body.get("title", ""), str):
        problems.append("title: must be a string")
    return problems


def _check_heygen_v3(body: Any) -> Problems:
    """The v3 create body's documented rules: type avatar with avatar_id, and a script (at most 5000 characters)."""
    if not isinstance(body, dict):
        return ["body is invalid: must be a JSON object"]
    problems: Problems = []
    if body.get("type") != "avatar" or not _text(body.get("avatar_id")):
        problems.append("type must be 'avatar', with an avatar_id")
    script = body.get("script")
    if not _text(script) or len(script) > 5000:
        problems.append("script is required, at most 5000 characters")
    if "video_inputs" in body or "dimension" in body:
        problems.append("video_inputs and dimension are v2 fields; v3 takes script, resolution and aspect_ratio")
    if body.get("resolution", "1080p") not in ("4k", "1080p", "720p"):
        problems.append("resolution must be 4k, 1080p or 720p")
    if body.get("aspect_ratio", "16:9") not in ("16:9", "9:16", "4:5", "5:4", "1:1", "auto"):
        problems.append("aspect_ratio must be 16:9, 9:16, 4:5, 5:4, 1:1 or auto")
    return problems


def _check_heygen(body: Any) -> Problems:
    """The generate body's documented rules: video_inputs[1..50] of character, voice and background."""
    if not isinstance(body, dict):
        return ["body is invalid: must be a JSON object"]
    problems: Problems = []
    inputs = body.get("video_inputs")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= 50:
        problems.append("video_inputs is invalid: must hold 1 to 50 items")
        inputs = []
    for index, item in enumerate(inputs):
        character = item.get("character") if isinstance(item, dict) else None
        voice = item.get("voice") if isinstance(item, dict) else None
        background = item.get("background", {"type": "color", "value": "#FFFFFF"}) if isinstance(item, dict) else None
        where = f"video_inputs[{index}]"
        if not isinstance(character, dict) or character.get("type") not in ("avatar", "talking_photo"):
            problems.append(f"{where}.character is invalid: type must be avatar or talking_photo")
        elif character["type"] == "avatar" and (
            not _text(character.get("avatar_id"))
            or character.get("avatar_style", "normal") not in ("normal", "closeUp", "circle")
        ):
            problems.append(f"{where}.character is invalid: avatar_id required, avatar_style normal|closeUp|circle")
        if not isinstance(voice, dict) or voice.get("type") not in ("text", "audio", "silence"):
            problems.append(f"{where}.voice is invalid: type must be text, audio or silence")
        elif voice["type"] == "text" and not (_text(voice.get("voice_id")) and _text(voice.get("input_text"))):
            problems.append(f"{where}.voice is invalid: voice_id and input_text are required")
        if not isinstance(background, dict) or not (
            (background.get("type") == "color" and _text(background.get("value")))
            or (background.get("type") in ("image", "video") and _text(background.get("url")))
        ):
            problems.append(f"{where}.background is invalid: color needs value, image or video needs url")
    dimension = body.get("dimension", {"width": 1280, "height": 720})
    if not isinstance(dimension, dict) or not all(
        isinstance(dimension.get(key), int) and not isinstance(dimension.get(key), bool) and dimension[key] > 0
        for key in ("width", "height")
    ):
        problems.append("dimension is invalid: width and height must be positive integers")
    if not isinstance(body.get("test", False), bool):
        problems.append("test is invalid: must be a boolean")
    return problems

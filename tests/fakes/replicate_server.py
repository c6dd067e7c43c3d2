"""A fake Replicate HTTP API (create, Prefer: wait, polling, cancel, output files) for the real replicate client."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import re
import struct
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from PIL import Image

from tests.fakes.base import FakeServer

TOKEN = "r8_fake_token_for_tests"
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
KOKORO_VERSION = "f559560eb822dc509045f3921a1921234918b91739db4bf3daab2169b71c7a13"
FLUX_DEV_VERSION = "f" * 64  # official models run by name; the fake still reports a version, as the API does
FLUX_ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
SDXL_SCHEDULERS = ("DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM", "K_EULER_ANCESTRAL", "K_EULER", "PNDM")
SDXL_REFINERS = ("no_refiner", "expert_ensemble_refiner", "base_image_refiner")
# What the safety checkers of flux and SDXL say when they refuse an image.
NSFW_ERROR = "NSFW content detected. Try running it again, or try a different prompt."
KOKORO_MS_PER_CHAR = 60
KOKORO_SAMPLE_RATE = 24000
UNAUTHENTICATED = {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401}
# What a broken output file holds: a WAV, PNG and MP4 signature each, and noise; no decoder takes it whole.
GARBAGE = b"RIFF\x24\x00\x00\x00WAVE\x89PNG\r\n\x1a\n\x00\x00\x00\x20ftypisom" + bytes(range(256)) * 8
THROTTLED = {"detail": "Request was throttled. Your rate limit resets in ~30s.", "status": 429}

Problems = list[str]
OutputFile = tuple[bytes, str, str]  # data, content type, file extension


@dataclass(frozen=True)
class FakeModel:
    name: str
    version: str
    official: bool
    check: Callable[[dict[str, Any]], Problems]
    make: Callable[[dict[str, Any]], list[OutputFile]]
    single_output: bool = False  # kokoro returns one URL; the image models a list


@dataclass
class FakePrediction:
    id: str
    model: FakeModel
    input: dict[str, Any]
    created_at: str
    status: str = "starting"
    polls: int = 0
    output: Any = None
    error: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # every status served, in order


class FakeReplicate(FakeServer):
    """Predictions progress starting -> processing -> done over `polls_to_finish` GETs (0: done in a waited create).

    Knobs (restored by reset()): `fail_with` (error text of a failed prediction; NSFW_ERROR for a safety refusal),
    `never_finish`, `truncate_output` (Content-Length larger than the body, then the connection closes),
    `data_uri_output`, `file_content_type` (serve files under another type), `predict_time`, `answer_delay` (a create
    makes its prediction, then answers this many seconds late), `garbage_output` (a finished prediction's file is
    noise under the model's content type), `failing_downloads` (that many file downloads answer 503).
    """

    def __init__(self) -> None:
        super().__init__()
        self.token = TOKEN
        self.models = {model.name: model for model in _default_models()}
        self.predictions: dict[str, FakePrediction] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self._defaults()

    def _defaults(self) -> None:
        self.polls_to_finish = 0
        self.predict_time = 1.5
        self.fail_with: str | None = None
        self.never_finish = False
        self.truncate_output = False
        self.data_uri_output = False
        self.file_content_type: str | None = None
        self.wait_hold_seconds = 0.05  # how long a `Prefer: wait` create is held when the prediction is unfinished
        self.answer_delay = 0.0
        self.garbage_output = False
        self.failing_downloads = 0
        self.list_page_size = 100

    def reset(self) -> None:
        super().reset()
        self.predictions.clear()
        self.files.clear()
        self._defaults()

    def creates(self) -> list[Any]:
        """Create requests (both endpoints), in order."""
        return [r for r in self.requests_to("/v1/", "POST") if r.path.endswith("/predictions")]

    def downloads(self) -> list[Any]:
        return self.requests_to("/files/", "GET")

    def cancels(self) -> list[Any]:
        return [r for r in self.requests_to("/v1/predictions/", "POST") if r.path.endswith("/cancel")]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self._create_by_model)
        app.router.add_post("/v1/predictions", self._create_by_version)
        app.router.add_get("/v1/predictions", self._list)
        app.router.add_get("/v1/predictions/{id}", self._get)
        app.router.add_post("/v1/predictions/{id}/cancel", self._cancel)
        app.router.add_get("/files/{name}", self._file)

    async def _create_by_model(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        name = f"{request.match_info['owner']}/{request.match_info['name']}"
        model = self.models.get(name)
        if model is None:
            return _problem(404, "Not found", f"Model {name} does not exist or you do not have access to it")
        if not model.official:
            return _problem(404, "Not found", f"{name} is not an official model; create the prediction with a version")
        return await self._create(request, model)

    async def _create_by_version(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await _json_body(request)
        reference = str((body or {}).get("version", ""))
        name, _, version = reference.rpartition(":") if ":" in reference else ("", "", reference)
        if "/" in version:  # `owner/name` alone runs an official model
            name, version = version, ""
        model = next(
            (
                m
                for m in self.models.values()
                if (version == m.version or (not version and m.official)) and name in ("", m.name)
            ),
            None,
        )
        if model is None:
            return _problem(
                404,
                "Invalid version or not permitted",
                "The specified version does not exist (or perhaps you don't have permission to use it?)",
            )
        return await self._create(request, model)

    async def _create(self, request: web.Request, model: FakeModel) -> web.StreamResponse:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return _problem(422, "Input validation failed", "- input: input is required and must be an object")
        problems = model.check(body["input"])
        if problems:
            return _problem(422, "Input validation failed", "\n".join(problems))
        prediction = FakePrediction(uuid.uuid4().hex[:26], model, body["input"], _now())
        self.predictions[prediction.id] = prediction
        wait = _prefer_wait(request.headers.get("Prefer", ""))
        headers = {"Preference-Applied": "wait"} if wait is not None else {}
        if wait is not None and self.polls_to_finish == 0 and not self.never_finish:
            self._finish(prediction)
        elif wait is not None:
            await asyncio.sleep(min(wait, self.wait_hold_seconds))  # held, but not done: answered as `starting`
        prediction.history.append(prediction.status)
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)  # the prediction exists (and runs) whether or not the client waits
        return web.json_response(self._json(prediction), status=201, headers=headers)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        """Newest first, `list_page_size` a page; `next` is the URL of the following page, or null."""
        if (denied := self._denied(request)) is not None:
            return denied
        newest_first = list(reversed(self.predictions.values()))
        start = int(request.query.get("cursor", "0"))
        end = start + self.list_page_size
        following = f"{self.base_url}/v1/predictions?cursor={end}" if end < len(newest_first) else None
        previous = f"{self.base_url}/v1/predictions?cursor={max(0, start - self.list_page_size)}" if start else None
        results = [{**self._json(p), "source": "api"} for p in newest_first[start:end]]
        return web.json_response({"next": following, "previous": previous, "results": results})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        if prediction.status in ("starting", "processing"):
            prediction.polls += 1
            if not self.never_finish and prediction.polls >= self.polls_to_finish:
                self._finish(prediction)
            else:
                prediction.status = "processing"
                prediction.started_at = prediction.started_at or _now()
        prediction.history.append(prediction.status)
        return web.json_response(self._json(prediction))

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        if prediction.status in ("starting", "processing"):
            prediction.status, prediction.completed_at = "canceled", _now()
        return web.json_response(self._json(prediction))

    async def _file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["name"] not in self.files:
            raise web.HTTPNotFound()
        data, content_type = self.files[request.match_info["name"]]
        if self.failing_downloads > 0:
            self.failing_downloads -= 1
            return web.Response(status=503, text="upstream connect error or disconnect/reset before headers")
        if not self.truncate_output:
            return web.Response(body=data, content_type=content_type)
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.content_length = len(data) + 4096
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        assert request.transport is not None
        request.transport.close()  # the client sees the body end early
        return response

    def _finish(self, prediction: FakePrediction) -> None:
        prediction.started_at = prediction.started_at or _now()
        prediction.completed_at = _now()
        if self.fail_with is not None:
            prediction.status, prediction.error = "failed", self.fail_with
            return
        made = prediction.model.make(prediction.input)
        if self.garbage_output:
            made = [(GARBAGE, content_type, extension) for _, content_type, extension in made]
        urls = [self._publish(prediction.id, index, output) for index, output in enumerate(made)]
        prediction.output = urls[0] if prediction.model.single_output else urls
        prediction.status = "succeeded"
        prediction.metrics = {"predict_time": self.predict_time}

    def _publish(self, prediction_id: str, index: int, made: OutputFile) -> str:
        data, content_type, extension = made
        content_type = self.file_content_type or content_type
        if self.data_uri_output:
            return f"data:{content_type};base64,{base64.b64encode(data).decode()}"
        name = f"{prediction_id}-{index}.{extension}"
        self.files[name] = (data, content_type)
        return f"{self.base_url}/files/{name}"

    def _json(self, prediction: FakePrediction) -> dict[str, Any]:
        url = f"{self.base_url}/v1/predictions/{prediction.id}"
        return {
            "id": prediction.id,
            "model": prediction.model.name,
            "version": prediction.model.version,
            "input": prediction.input,
            "output": prediction.output,
            "logs": "",
            "error": prediction.error,
            "status": prediction.status,
            "created_at": prediction.created_at,
            "started_at": prediction.started_at,
            "completed_at": prediction.completed_at,
            "data_removed": False,
            "metrics": prediction.metrics,
            "urls": {"get": url, "cancel": f"{url}/cancel"},
        }

    def _denied(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(UNAUTHENTICATED, status=401)
        return None


def _problem(status: int, title: str, detail: str) -> web.Response:
    return web.json_response({"title": title, "detail": detail, "status": status}, status=status)


async def _json_body(request: web.Request) -> Any:
    # The base server's middleware has already read the body; aiohttp caches it, so this read is free.
    try:
        return json.loads(await request.read() or b"null")
    except ValueError:
        return None


def _prefer_wait(header: str) -> float | None:
    match = re.fullmatch(r"\s*wait(?:=(\d+))?\s*", header)
    if match is None:
        return None
    return float(match.group(1)) if match.group(1) else 60.0


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# Input checks, with the ranges of providers.md section 4; messages imitate Cog's validation output.
def _number(
    inputs: dict[str, Any], key: str, low: float, high: float, problems: Problems, integer: bool = False
) -> None:
    if key not in inputs:
        return
    value = inputs[key]
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        problems.append(f"- input.{key}: Invalid type. Expected: {'integer' if integer else 'number'}")
    elif value < low:
        problems.append(f"- input.{key}: Must be greater than or equal to {low}")
    elif value > high:
        problems.append(f"- input.{key}: Must be less than or equal to {high}")


def _choice(inputs: dict[str, Any], key: str, choices: tuple[str, ...], problems: Problems) -> None:
    if key in inputs and inputs[key] not in choices:
        problems.append(f"- input.{key}: {key} must be one of the following: {', '.join(map(repr, choices))}")


def _text(inputs: dict[str, Any], key: str, problems: Problems) -> None:
    if not isinstance(inputs.get(key), str) or not inputs[key].strip():
        problems.append(f"- input: {key} is required")


def _check_flux(inputs: dict[str, Any]) -> Problems:
    problems: Problems = []
    _text(inputs, "prompt", problems)
    _choice(inputs, "aspect_ratio", FLUX_ASPECT_RATIOS, problems)
    _number(inputs, "num_inference_steps", 1, 50, problems, integer=True)
    _number(inputs, "num_outputs", 1, 4, problems, integer=True)
    _number(inputs, "guidance", 0, 10, problems)
    _number(inputs, "output_quality", 0, 100, problems, integer=True)
    _choice(inputs, "output_format", ("webp", "jpg", "png"), problems)
    _choice(inputs, "megapixels", ("1", "0.25"), problems)
    return problems


def _check_sdxl(inputs: dict[str, Any]) -> Problems:
    problems: Problems = []
    _text(inputs, "prompt", problems)
    # The schema gives no range for width/height; multiples of 8 up to 2048 is our assumption of what the UNet takes.
    for key in ("width", "height"):
        _number(inputs, key, 128, 2048, problems, integer=True)
        if isinstance(inputs.get(key), int) and inputs[key] % 8:
            problems.append(f"- input.{key}: must be a multiple of 8")
    _number(inputs, "num_inference_steps", 1, 500, problems, integer=True)
    _number(inputs, "guidance_scale", 1, 50, problems)
    _number(inputs, "num_outputs", 1, 4, problems, integer=True)
    _choice(inputs, "scheduler", SDXL_SCHEDULERS, problems)
    _choice(inputs, "refine", SDXL_REFINERS, problems)
    return problems


def _check_kokoro(inputs: dict[str, Any]) -> Problems:
    problems: Problems = []
    _text(inputs, "text", problems)
    _number(inputs, "speed", 0.1, 5, problems)
    if "voice" in inputs and not re.fullmatch(r"[a-z]{2}_[a-z]+", str(inputs["voice"])):
        problems.append(f"- input.voice: unknown voice {inputs['voice']!r}")
    return problems


def _picture(width: int, height: int, image_format: str) -> bytes:
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


_FORMATS = {"png": ("PNG", "image/png"), "webp": ("WEBP", "image/webp"), "jpg": ("JPEG", "image/jpeg")}


def _make_flux(inputs: dict[str, Any]) -> list[OutputFile]:
    across, down = (int(part) for part in inputs.get("aspect_ratio", "1:1").split(":"))
    pixels = 1024 * 1024 * (0.25 if inputs.get("megapixels") == "0.25" else 1)
    width = round(math.sqrt(pixels * across / down) / 64) * 64
    height = round(math.sqrt(pixels * down / across) / 64) * 64
    extension = inputs.get("output_format", "webp")
    image_format, content_type = _FORMATS[extension]
    return [(_picture(width, height, image_format), content_type, extension)] * inputs.get("num_outputs", 1)


def _make_sdxl(inputs: dict[str, Any]) -> list[OutputFile]:
    data = _picture(inputs.get("width", 1024), inputs.get("height", 1024), "PNG")
    return [(data, "image/png", "png")] * inputs.get("num_outputs", 1)


def _make_kokoro(inputs: dict[str, Any]) -> list[OutputFile]:
    """A soft 220 Hz tone, KOKORO_MS_PER_CHAR per character at speed 1, as 16-bit mono WAV."""
    seconds = len(inputs["text"]) * KOKORO_MS_PER_CHAR / 1000 / float(inputs.get("speed", 1))
    frames = round(seconds * KOKORO_SAMPLE_RATE)
    samples = (round(3000 * math.sin(2 * math.pi * 220 * n / KOKORO_SAMPLE_RATE)) for n in range(frames))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(KOKORO_SAMPLE_RATE)
        wav.writeframes(struct.pack(f"<{frames}h", *samples))
    return [(buffer.getvalue(), "audio/wav", "wav")]


def _default_models() -> list[FakeModel]:
    return [
        FakeModel("stability-ai/sdxl", SDXL_VERSION, False, _check_sdxl, _make_sdxl),
        FakeModel("black-forest-labs/flux-dev", FLUX_DEV_VERSION, True, _check_flux, _make_flux),
        FakeModel("jaaari/kokoro-82m", KOKORO_VERSION, False, _check_kokoro, _make_kokoro, single_output=True),
    ]

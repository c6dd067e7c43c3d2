"""Fake video model servers that answer with real MP4 clips: Wan on Replicate, a Cog container, and ComfyUI."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import itertools
import json
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio_ffmpeg
from aiohttp import web
from PIL import Image, UnidentifiedImageError

from tests.fakes.base import FakeServer, VideoFilesServer
from tests.fakes.replicate_server import FakeModel, FakeReplicate, OutputFile, Problems, _choice, _number, _text

WAN_T2V = "wavespeedai/wan-2.1-t2v-480p"
WAN_I2V = "wavespeedai/wan-2.1-i2v-480p"
WAN_SIZES = {"16:9": (832, 480), "9:16": (480, 832)}
# fast_mode's choices in the models' current versions (providers.md section 4).
WAN_FAST_MODES = ("Off", "Balanced", "Fast")
WAN_AREAS = {"832x480": (832, 480), "480x832": (480, 832)}
COMFY_CHECKPOINTS = ("ltx-video-2b-v0.9.5.safetensors",)
# ComfyUI's input types for the nodes the test templates use (what its validation converts and checks).
COMFY_INT_INPUTS = {"width", "height", "length", "batch_size", "noise_seed", "steps", "loop_count", "crf"}
COMFY_FLOAT_INPUTS = {"frame_rate", "fps", "cfg", "max_shift", "base_shift", "terminal"}
COMFY_NODES = {
    "CheckpointLoaderSimple",
    "CLIPLoader",
    "CLIPTextEncode",
    "EmptyLTXVLatentVideo",
    "LTXVConditioning",
    "LTXVScheduler",
    "KSamplerSelect",
    "SamplerCustom",
    "VAEDecode",
    "CreateVideo",
    "SaveVideo",
    "SaveImage",
    "VHS_VideoCombine",
}
COMFY_OUTPUT_NODES = {"SaveVideo", "SaveImage", "VHS_VideoCombine"}


@functools.lru_cache(maxsize=32)
def make_clip(width: int, height: int, frames: int, fps: int, audio: bool = False) -> bytes:
    """An H.264 MP4 test pattern of exactly `frames` frames (and a 440 Hz tone as long, with `audio`)."""
    with tempfile.TemporaryDirectory(prefix="fake-clip-") as tmp:
        output = Path(tmp) / "clip.mp4"
        argv = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin"]
        argv += ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}"]
        if audio:
            argv += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={frames / fps}"]
        argv += ["-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        if audio:
            argv += ["-c:a", "aac"]
        argv += ["-movflags", "+faststart", "-y", str(output)]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        return output.read_bytes()


def corrupt(clip: bytes) -> bytes:
    """A clip whose header was lost: the `ftyp` box is cut off, so no player (or sniffer) takes it for MP4."""
    return clip[16:]


def decode_image_uri(uri: str) -> Image.Image | None:
    """The image inside a base64 data: URI, or None when it holds none."""
    header, _, payload = uri.partition(",")
    if not header.startswith("data:image/") or ";base64" not in header:
        return None
    try:
        image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        image.load()
    except (ValueError, UnidentifiedImageError, OSError):
        return None
    return image


# --- Wan on Replicate -------------------------------------------------------------------------------------------


class FakeReplicateVideo(FakeReplicate):
    """FakeReplicate that also serves the two official Wan 2.1 480p models (providers.md section 4).

    Extra knob (restored by reset()): `corrupt_video` makes the models' MP4s lose their header.
    """

    def __init__(self) -> None:
        super().__init__()
        self.models[WAN_T2V] = FakeModel(WAN_T2V, "6" * 64, True, _check_wan_t2v, self._make_wan, single_output=True)
        self.models[WAN_I2V] = FakeModel(WAN_I2V, "7" * 64, True, _check_wan_i2v, self._make_wan, single_output=True)

    def _defaults(self) -> None:
        super()._defaults()
        self.corrupt_video = False

    def _make_wan(self, inputs: dict[str, Any]) -> list[OutputFile]:
        if "max_area" in inputs or "image" in inputs:
            width, height = WAN_AREAS[inputs.get("max_area", "832x480")]
        else:
            width, height = WAN_SIZES[inputs.get("aspect_ratio", "16:9")]
        clip = make_clip(width, height, inputs.get("num_frames", 81), inputs.get("frames_per_second", 16))
        return [(corrupt(clip) if self.corrupt_video else clip, "video/mp4", "mp4")]


def _check_wan_common(inputs: dict[str, Any], frames: tuple[int, int], problems: Problems) -> None:
    _text(inputs, "prompt", problems)
    _number(inputs, "num_frames", *frames, problems, integer=True)
    _number(inputs, "frames_per_second", 5, 24, problems, integer=True)
    _number(inputs, "sample_steps", 1, 40, problems, integer=True)
    _number(inputs, "sample_guide_scale", 0, 10, problems)
    _number(inputs, "sample_shift", 1, 10, problems)
    _number(inputs, "seed", 0, 2**32 - 1, problems, integer=True)
    _choice(inputs, "fast_mode", WAN_FAST_MODES, problems)


def _check_wan_t2v(inputs: dict[str, Any]) -> Problems:
    problems: Problems = []
    _check_wan_common(inputs, (5, 100), problems)
    _choice(inputs, "aspect_ratio", tuple(WAN_SIZES), problems)
    return problems


def _check_wan_i2v(inputs: dict[str, Any]) -> Problems:
    problems: Problems = []
    _check_wan_common(inputs, (81, 100), problems)
    _choice(inputs, "max_area", tuple(WAN_AREAS), problems)
    image = inputs.get("image")
    if not isinstance(image, str) or not (image.startswith("http") or decode_image_uri(image) is not None):
        problems.append("- input.image: image is required (a URL or a data: URI of an image)")
    return problems


# --- Cog --------------------------------------------------------------------------------------------------------


@dataclass
class CogPrediction:
    id: str
    input: dict[str, Any]
    status: str = "processing"
    polls: int = 0
    output: Any = None
    error: str | None = None
    history: list[str] = field(default_factory=list)  # every status served, in order


class FakeCogVideo(VideoFilesServer):
    """A Cog container running a text/image-to-video model (the Cog HTTP API of providers.md section 8).

    By default `POST /predictions` answers when the clip is made (synchronous Cog), with the MP4 as a data: URI.
    Knobs (restored by reset()): `async_mode` (answer 202 `processing` with an id, then done after `polls_to_finish`
    GETs of /predictions/{id}), `never_finish` (async mode only), `fail_with` (a `failed` status with this error),
    `corrupt_output`, `url_output` (an http URL on this server, or on `files_on`, instead of a data: URI), `with_audio`,
    `model_name` (reported as `model`, as some servers do), `failing_downloads` (that many file downloads answer 503).
    """

    def __init__(self) -> None:
        super().__init__()
        self.predictions: dict[str, CogPrediction] = {}
        self._defaults()

    def _defaults(self) -> None:
        self.async_mode = False
        self.polls_to_finish = 0
        self.never_finish = False
        self.fail_with: str | None = None
        self.corrupt_output = False
        self.url_output = False
        # With url_output: another server (the same host on another port) that the output URL points at instead.
        self.files_on: FakeCogVideo | None = None
        self.with_audio = False
        self.model_name: str | None = None

    def reset(self) -> None:
        super().reset()
        self.predictions.clear()
        self._defaults()

    def creates(self) -> list[Any]:
        return [r for r in self.requests_to("/predictions", "POST") if r.path == "/predictions"]

    def cancels(self) -> list[Any]:
        return [r for r in self.requests_to("/predictions/", "POST") if r.path.endswith("/cancel")]

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/health-check", self._health)
        app.router.add_post("/predictions", self._create)
        app.router.add_get("/predictions/{id}", self._get)
        app.router.add_post("/predictions/{id}/cancel", self._cancel)
        app.router.add_get("/files/{name}", self._file)

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "READY", "setup": {"status": "succeeded"}})

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = _json(await request.read())
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return _unprocessable([(["body", "input"], "field required")])
        problems = _check_cog(body["input"])
        if problems:
            return _unprocessable(problems)
        prediction = CogPrediction(uuid.uuid4().hex, body["input"])
        self.predictions[prediction.id] = prediction
        if self.async_mode:
            prediction.history.append(prediction.status)
            return web.json_response(self._json(prediction), status=202)
        await self._finish(prediction)
        return web.json_response(self._json(prediction))

    async def _get(self, request: web.Request) -> web.StreamResponse:
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        if prediction.status == "processing":
            prediction.polls += 1
            if not self.never_finish and prediction.polls >= self.polls_to_finish:
                await self._finish(prediction)
        prediction.history.append(prediction.status)
        return web.json_response(self._json(prediction))

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        if prediction.status == "processing":
            prediction.status = "canceled"
        return web.json_response({})

    async def _finish(self, prediction: CogPrediction) -> None:
        if self.fail_with is not None:
            prediction.status, prediction.error = "failed", self.fail_with
            prediction.history.append(prediction.status)
            return
        inputs = prediction.input
        clip = await asyncio.to_thread(
            make_clip, inputs["width"], inputs["height"], inputs["num_frames"], inputs["fps"], self.with_audio
        )
        data = corrupt(clip) if self.corrupt_output else clip
        if self.url_output:
            server = self.files_on or self
            server.files[f"{prediction.id}.mp4"] = data
            prediction.output = f"{server.base_url}/files/{prediction.id}.mp4"
        else:
            prediction.output = f"data:video/mp4;base64,{base64.b64encode(data).decode()}"
        prediction.status = "succeeded"
        if not self.async_mode:
            prediction.history.append(prediction.status)

    def _json(self, prediction: CogPrediction) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": prediction.id,
            "input": prediction.input,
            "output": prediction.output,
            "status": prediction.status,
            "error": prediction.error,
            "logs": "",
            "metrics": {"predict_time": 1.2} if prediction.status == "succeeded" else {},
        }
        if self.model_name:
            answer["model"] = self.model_name
        return answer


def _check_cog(inputs: dict[str, Any]) -> list[tuple[list[str], str]]:
    """What an LTX-Video predictor's schema would refuse (pydantic messages, as Cog's FastAPI answers)."""
    problems: list[tuple[list[str], str]] = []
    if not isinstance(inputs.get("prompt"), str) or not inputs["prompt"].strip():
        problems.append((["body", "input", "prompt"], "field required"))
    for key, low, high in (("width", 64, 1280), ("height", 64, 1280), ("num_frames", 9, 257), ("fps", 1, 60)):
        value = inputs.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append((["body", "input", key], "value is not a valid integer"))
        elif not low <= value <= high:
            problems.append((["body", "input", key], f"ensure this value is between {low} and {high}"))
    if "image" in inputs and decode_image_uri(str(inputs["image"])) is None:
        problems.append((["body", "input", "image"], "invalid image data URI"))
    return problems


def _unprocessable(problems: list[tuple[list[str], str]]) -> web.Response:
    detail = [{"loc": loc, "msg": msg, "type": "value_error"} for loc, msg in problems]
    return web.json_response({"detail": detail}, status=422)


# --- ComfyUI ----------------------------------------------------------------------------------------------------


@dataclass
class ComfyPrompt:
    id: str
    number: int
    graph: dict[str, Any]
    client_id: str
    polls: int = 0
    entry: dict[str, Any] | None = None


class FakeComfyUI(FakeServer):
    """ComfyUI's HTTP API (providers.md section 8): /prompt validates and queues, /history/{id} is {} until done.

    The outputs follow the graph's output nodes, in order: SaveImage and core SaveVideo report under `images` (the
    video with `animated`), VideoHelperSuite's VHS_VideoCombine under `gifs`. Knobs (restored by reset()):
    `polls_to_finish` (empty history answers before the entry), `never_finish`, `fail_with` (an execution_error),
    `corrupt_output`, `with_audio`, `lose_answers` (that many /prompt calls queue their prompt, then close the
    connection unanswered), `failing_views` (that many /view downloads answer 503).
    """

    def __init__(self) -> None:
        super().__init__()
        self.prompts: dict[str, ComfyPrompt] = {}
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.interrupts: list[Any] = []
        self.deleted: list[str] = []
        self._numbers = itertools.count()
        self._defaults()

    def _defaults(self) -> None:
        self.polls_to_finish = 0
        self.never_finish = False
        self.fail_with: str | None = None
        self.corrupt_output = False
        self.with_audio = False
        self.lose_answers = 0
        self.failing_views = 0

    def reset(self) -> None:
        super().reset()
        self.prompts.clear()
        self.files.clear()
        self.interrupts.clear()
        self.deleted.clear()
        self._defaults()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/prompt", self._prompt)
        app.router.add_get("/history/{id}", self._history)
        app.router.add_get("/view", self._view)
        app.router.add_post("/interrupt", self._interrupt)
        app.router.add_post("/queue", self._queue)
        app.router.add_get("/queue", self._queue_list)
        app.router.add_get("/history", self._history_list)

    async def _prompt(self, request: web.Request) -> web.StreamResponse:
        body = _json(await request.read())
        graph = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(graph, dict):
            return _comfy_refusal("invalid_prompt", "Cannot execute because the prompt is not a node graph.", {})
        for node_id, node in graph.items():
            if not isinstance(node, dict) or node.get("class_type") not in COMFY_NODES:
                kind = node.get("class_type") if isinstance(node, dict) else None
                return _comfy_refusal(
                    "invalid_prompt", f"Cannot execute because node {kind} does not exist.", {}, f"Node ID '#{node_id}'"
                )
        if not any(node["class_type"] in COMFY_OUTPUT_NODES for node in graph.values()):
            return _comfy_refusal("prompt_no_outputs", "Prompt has no outputs", {})
        node_errors = {
            node_id: {"errors": errors, "dependent_outputs": [], "class_type": node["class_type"]}
            for node_id, node in graph.items()
            if (errors := _node_errors(node))
        }
        if node_errors:
            return _comfy_refusal("prompt_outputs_failed_validation", "Prompt outputs failed validation", node_errors)
        prompt = ComfyPrompt(uuid.uuid4().hex, next(self._numbers), graph, str(body.get("client_id", "")))
        self.prompts[prompt.id] = prompt
        if self.lose_answers > 0:
            self.lose_answers -= 1
            assert request.transport is not None
            request.transport.close()  # queued, but the client never hears of it
            raise web.HTTPInternalServerError()
        return web.json_response({"prompt_id": prompt.id, "number": prompt.number, "node_errors": {}})

    async def _queue_list(self, request: web.Request) -> web.StreamResponse:
        """Prompts not yet run, as [number, prompt_id, graph, extra_data, outputs]; this fake runs none meanwhile."""
        pending = [_queued(prompt) for prompt in self.prompts.values() if prompt.entry is None]
        return web.json_response({"queue_running": [], "queue_pending": pending})

    async def _history_list(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({p.id: p.entry for p in self.prompts.values() if p.entry is not None})

    async def _history(self, request: web.Request) -> web.StreamResponse:
        prompt = self.prompts.get(request.match_info["id"])
        if prompt is None:
            return web.json_response({})
        prompt.polls += 1
        if prompt.entry is None and not self.never_finish and prompt.polls > self.polls_to_finish:
            prompt.entry = await self._run(prompt)
        return web.json_response({prompt.id: prompt.entry} if prompt.entry is not None else {})

    async def _view(self, request: web.Request) -> web.StreamResponse:
        key = (request.query.get("filename", ""), request.query.get("subfolder", ""), request.query.get("type", ""))
        if key not in self.files:
            raise web.HTTPNotFound()
        if self.failing_views > 0:
            self.failing_views -= 1
            return web.Response(status=503, text="Service Unavailable")
        content_type = "image/png" if key[0].endswith(".png") else "video/mp4"
        return web.Response(body=self.files[key], content_type=content_type)

    async def _interrupt(self, request: web.Request) -> web.StreamResponse:
        self.interrupts.append(_json(await request.read()) or {})
        return web.Response()

    async def _queue(self, request: web.Request) -> web.StreamResponse:
        body = _json(await request.read()) or {}
        self.deleted.extend(body.get("delete", []))
        return web.Response()

    async def _run(self, prompt: ComfyPrompt) -> dict[str, Any]:
        graph = prompt.graph
        queued = _queued(prompt)
        start = ["execution_start", {"prompt_id": prompt.id, "timestamp": 0}]
        if self.fail_with is not None:
            sampler = next((i for i, n in graph.items() if n["class_type"] == "SamplerCustom"), next(iter(graph)))
            error = {
                "prompt_id": prompt.id,
                "node_id": sampler,
                "node_type": graph[sampler]["class_type"],
                "executed": [],
                "exception_message": self.fail_with,
                "exception_type": "torch.OutOfMemoryError",
                "traceback": ["..."],
                "current_inputs": {},
                "current_outputs": {},
            }
            status = {"status_str": "error", "completed": False, "messages": [start, ["execution_error", error]]}
            return {"prompt": queued, "outputs": {}, "status": status, "meta": {}}
        outputs: dict[str, Any] = {}
        for node_id, node in graph.items():
            if node["class_type"] in COMFY_OUTPUT_NODES:
                outputs[node_id] = await self._save(graph, node)
        success = ["execution_success", {"prompt_id": prompt.id, "timestamp": 1}]
        status = {"status_str": "success", "completed": True, "messages": [start, success]}
        return {"prompt": queued, "outputs": outputs, "status": status, "meta": {}}

    async def _save(self, graph: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
        prefix = str(node["inputs"].get("filename_prefix", "ComfyUI"))
        subfolder, _, name = prefix.rpartition("/")
        counter = len(self.files) + 1
        if node["class_type"] == "SaveImage":
            filename = f"{name}_{counter:05}_.png"
            buffer = io.BytesIO()
            Image.new("RGB", (64, 36), "gray").save(buffer, format="PNG")
            self.files[(filename, subfolder, "output")] = buffer.getvalue()
            return {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}
        width, height, frames = _latent_size(graph)
        fps = _frame_rate(graph, node)
        clip = await asyncio.to_thread(make_clip, width, height, frames, fps, self.with_audio)
        filename = f"{name}_{counter:05}_.mp4"
        self.files[(filename, subfolder, "output")] = corrupt(clip) if self.corrupt_output else clip
        item = {"filename": filename, "subfolder": subfolder, "type": "output"}
        if node["class_type"] == "VHS_VideoCombine":
            return {"gifs": [{**item, "format": "video/h264-mp4", "frame_rate": fps, "workflow": "x.png"}]}
        return {"images": [item], "animated": [True]}


def _queued(prompt: ComfyPrompt) -> list[Any]:
    return [prompt.number, prompt.id, prompt.graph, {"client_id": prompt.client_id}, []]


def _node_errors(node: dict[str, Any]) -> list[dict[str, Any]]:
    """ComfyUI's own input validation: types convert (or fail), list values must be among the installed files."""
    errors = []
    for name, value in (node.get("inputs") or {}).items():
        if isinstance(value, list):  # a link to another node's output
            continue
        wanted = "INT" if name in COMFY_INT_INPUTS else "FLOAT" if name in COMFY_FLOAT_INPUTS else ""
        if wanted and (isinstance(value, bool) or not isinstance(value, int if wanted == "INT" else (int, float))):
            errors.append(
                {
                    "type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {wanted} value",
                    "details": f"{name}, {value}, invalid literal for {wanted.lower()}()",
                    "extra_info": {"input_name": name, "input_config": None, "received_value": value},
                }
            )
        if name == "ckpt_name" and value not in COMFY_CHECKPOINTS:
            errors.append(
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": f"{name}: '{value}' not in {list(COMFY_CHECKPOINTS)}",
                    "extra_info": {"input_name": name, "received_value": value},
                }
            )
    return errors


def _latent_size(graph: dict[str, Any]) -> tuple[int, int, int]:
    for node in graph.values():
        if node["class_type"] == "EmptyLTXVLatentVideo":
            return node["inputs"]["width"], node["inputs"]["height"], node["inputs"]["length"]
    return 768, 512, 97


def _frame_rate(graph: dict[str, Any], node: dict[str, Any]) -> int:
    """The saving node's frame rate, following CreateVideo's link for core SaveVideo."""
    if node["class_type"] == "VHS_VideoCombine":
        return round(node["inputs"]["frame_rate"])
    source = node["inputs"].get("video")
    if isinstance(source, list) and graph.get(source[0], {}).get("class_type") == "CreateVideo":
        return round(graph[source[0]]["inputs"]["fps"])
    return 24


def _comfy_refusal(kind: str, message: str, node_errors: dict[str, Any], details: str = "") -> web.Response:
    error = {"type": kind, "message": message, "details": details, "extra_info": {}}
    return web.json_response({"error": error, "node_errors": node_errors}, status=400)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return None

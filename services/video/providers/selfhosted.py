"""Your own video model (LTX-Video, Wan, ...) behind a Cog-style HTTP server or ComfyUI, chosen by SELFHOSTED_VIDEO_API.

Cog: `POST /predictions {"input": {...}}` answered when done (or `processing` with an id that is polled).
ComfyUI: a workflow template (API format) with `{{placeholders}}`, queued with `POST /prompt`, polled on
`/history/{id}`, the video fetched from `/view`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
import urllib.parse
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import httpx
from PIL import Image, UnidentifiedImageError
from pydantic import Field, SecretStr, model_validator

from services.common import jobs
from services.common.download import Downloaded, fetch_output, origin
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    JobFailed,
    MissingCredential,
    ProviderUnavailable,
    ScenecastError,
)
from services.common.media import probe
from services.common.providers import Price, Provider, ProviderDescription, ProviderSettings
from services.common.retry import http_status_error, retry_after_seconds
from services.video.providers.base import ClipJob, ClipResult, write_clip

_LOGGER = logging.getLogger(__name__)

NAME = "selfhosted"
URL_ENV = "SELFHOSTED_VIDEO_URL"
API_ENV = "SELFHOSTED_VIDEO_API"
WORKFLOW_ENV = "SELFHOSTED_COMFYUI_WORKFLOW"
TIMEOUT_ENV = "SELFHOSTED_VIDEO_TIMEOUT_SECONDS"
OUTPUT_ORIGINS_ENV = "SELFHOSTED_VIDEO_OUTPUT_ORIGINS"

# The short side of the clip, as in "480p"; both sides become multiples of 32, which LTX-Video needs.
DEFAULT_SHORT_SIDE = 480
SIZE_STEP = 32
DEFAULT_FPS = 24
# LTX-Video takes 8k+1 frames; 121 is about 5 s at 24 fps.
DEFAULT_MAX_FRAMES = 121
MIN_FRAMES = 9
DEFAULT_DURATION_MS = 5000
DEFAULT_TIMEOUT_SECONDS = 900.0
# First wait between status checks, in seconds; it grows to 15 times this. A failed check (429, 5xx) only delays the
# next one: the job is still running on the server, and giving up on it would waste the GPU time already spent.
DEFAULT_POLL_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 10.0
WRITE_TIMEOUT_SECONDS = 60.0
DOWNLOAD_TIMEOUT_SECONDS = 120.0
CLEANUP_TIMEOUT_SECONDS = 5.0
MAX_VIDEO_BYTES = 200 * 1024 * 1024
# LTX-Video's recommended negative prompt; Wan-style templates may ignore it.
NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted, watermark, text"
_DETAIL_CHARS = 500
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# Inputs through which a ComfyUI template names its model file, reported in metadata.
_MODEL_INPUTS = ("ckpt_name", "unet_name", "model_name")
_PENDING = ("starting", "processing")


@dataclass(frozen=True)
class ClipPlan:
    """What is asked of the model, whichever wire carries it."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    frames: int
    fps: int
    seed: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def cog_input(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "width": self.width,
            "height": self.height,
            "num_frames": self.frames,
            "fps": self.fps,
            "seed": self.seed,
        }

    def placeholders(self) -> dict[str, str | int]:
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "fps": self.fps,
            "seed": self.seed,
        }


class SelfHostedSettings(ProviderSettings):
    """The operator's model server, and what is asked of it; checked at start-up."""

    # Base URL of the Cog or ComfyUI server. A secret: its user info may hold a password.
    selfhosted_video_url: SecretStr = SecretStr("")
    # The server's API: "cog" (Cog's HTTP API, as Replicate's models speak it) or "comfyui".
    selfhosted_video_api: Literal["cog", "comfyui"] = "cog"
    # ComfyUI only: a workflow in API format with {{prompt}}-style placeholders.
    selfhosted_comfyui_workflow: str = ""
    # The clip's short side in pixels ("480p").
    selfhosted_video_height: int = Field(default=DEFAULT_SHORT_SIDE, ge=64, le=2160)
    selfhosted_video_fps: int = Field(default=DEFAULT_FPS, ge=1, le=60)
    # Most frames in a clip (brought down to 8k+1).
    selfhosted_video_max_frames: int = Field(default=DEFAULT_MAX_FRAMES, ge=MIN_FRAMES, le=1025)
    # Longest a clip is waited for, in seconds.
    selfhosted_video_timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS, ge=0.1, le=24 * 3600.0)
    # First wait between status checks, in seconds.
    selfhosted_video_poll_seconds: float = Field(default=DEFAULT_POLL_SECONDS, ge=0.001, le=60.0)
    # Comma-separated origins (scheme://host[:port]) besides the server's own that output files may come from.
    selfhosted_video_output_origins: str = ""
    # What a second of clip costs you (your GPU time), in USD; free by default.
    selfhosted_video_usd_per_second: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check_origins(self) -> Self:
        if self.url or self.selfhosted_video_output_origins:
            output_origins_of(self.url, self.selfhosted_video_output_origins)
        return self

    @property
    def url(self) -> str:
        return self.selfhosted_video_url.get_secret_value().strip().rstrip("/")

    @property
    def output_origins(self) -> frozenset[str]:
        """Where output files may be downloaded from: the server's own origin and OUTPUT_ORIGINS_ENV's."""
        return output_origins_of(self.url, self.selfhosted_video_output_origins)


def check_server_url(url: str) -> None:
    """SELFHOSTED_VIDEO_URL must be an http(s) URL with a host: any other scheme (file:, gopher:) would let the
    setting reach things that are not a model server. Raises ValueError naming the variable."""
    scheme = urllib.parse.urlsplit(url.strip()).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"{URL_ENV} must be an http:// or https:// URL such as http://gpu-box:5000 (got {scheme!r})")
    try:
        origin(url)
    except ValueError as error:
        raise ValueError(f"{URL_ENV} is not a usable URL: {error}") from None


def output_origins_of(url: str, extra: str) -> frozenset[str]:
    """The origins output files may come from: the server's own, and those listed in SELFHOSTED_VIDEO_OUTPUT_ORIGINS.

    Only the configured origin by default: a server (or whoever controls its answers) pointing the download at the
    same host on another port could otherwise make the video service fetch from any service listening there.
    Raises ValueError naming the variable at fault.
    """
    check_server_url(url)
    origins = {origin(url)}
    for entry in (part.strip() for part in extra.split(",")):
        if not entry:
            continue
        try:
            if urllib.parse.urlsplit(entry).scheme not in ("http", "https"):
                raise ValueError("not an http:// or https:// origin")
            origins.add(origin(entry))
        except ValueError as error:
            raise ValueError(
                f"{OUTPUT_ORIGINS_ENV}: {entry[:80]!r} is not an origin written like https://files.example:8443 "
                f"({error})"
            ) from None
    return frozenset(origins)


def clip_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The output's aspect ratio at `short_side` ("480p"), each side rounded to a multiple of 32."""
    scale = short_side / min(width, height)
    return _multiple(width * scale), _multiple(height * scale)


def _multiple(length: float) -> int:
    return max(SIZE_STEP, round(length / SIZE_STEP) * SIZE_STEP)


def clip_frames(duration_ms: int, fps: int, max_frames: int) -> int:
    """The 8k+1 frame count nearest the wanted length, from 9 up to `max_frames` (itself brought down to 8k+1)."""
    wanted = (duration_ms or DEFAULT_DURATION_MS) * fps / 1000
    cap = max(MIN_FRAMES, (max_frames - 1) // 8 * 8 + 1)
    return min(cap, max(MIN_FRAMES, round((wanted - 1) / 8) * 8 + 1))


def plan_clip(job: ClipJob, short_side: int, fps: int, max_frames: int) -> ClipPlan:
    width, height = clip_size(job.width, job.height, short_side)
    prompt = job.prompt or job.title
    if not prompt:
        raise InvalidArgument(f"spec.scene.visual_prompt and spec.scene.title are both empty; {NAME} needs a prompt")
    return ClipPlan(
        prompt=prompt,
        negative_prompt=NEGATIVE_PROMPT,
        width=width,
        height=height,
        frames=clip_frames(job.duration_ms, fps, max_frames),
        fps=fps,
        # Stable per scene, so a re-render (or a retry) asks for the same clip.
        seed=zlib.crc32(f"{job.render_id}/{job.scene_index}/{prompt}".encode()),
    )


class SelfHostedProvider(Provider[SelfHostedSettings, ClipJob]):
    description = ProviderDescription(
        name=NAME,
        description=(
            "Your own video model (e.g. LTX-Video) behind a Cog-style server or ComfyUI "
            f"({API_ENV}=cog|comfyui); sends the scene's image when given"
        ),
        offline=False,
    )
    settings_class = SelfHostedSettings
    required_settings = ("selfhosted_video_url",)
    output_settings = (
        "selfhosted_video_url",
        "selfhosted_video_api",
        "selfhosted_comfyui_workflow",
        "selfhosted_video_height",
        "selfhosted_video_fps",
        "selfhosted_video_max_frames",
    )

    @classmethod
    def prices(cls, settings: SelfHostedSettings) -> tuple[Price, ...]:
        rate = settings.selfhosted_video_usd_per_second
        return (
            Price("self-hosted video model", "output second", rate, "your GPU time: SELFHOSTED_VIDEO_USD_PER_SECOND"),
        )

    @classmethod
    def estimate_usd(cls, settings: SelfHostedSettings, job: ClipJob) -> float:
        frames = clip_frames(job.duration_ms, settings.selfhosted_video_fps, settings.selfhosted_video_max_frames)
        return settings.selfhosted_video_usd_per_second * frames / settings.selfhosted_video_fps

    async def generate(self, job: ClipJob) -> ClipResult:
        settings = self.settings
        if not settings.url:
            raise MissingCredential(URL_ENV, NAME)
        plan = plan_clip(
            job, settings.selfhosted_video_height, settings.selfhosted_video_fps, settings.selfhosted_video_max_frames
        )
        time_limit = settings.selfhosted_video_timeout_seconds
        # A synchronous Cog answers only when the clip is made, so a read may take the whole time limit.
        timeout = httpx.Timeout(CONNECT_TIMEOUT_SECONDS, read=time_limit, write=WRITE_TIMEOUT_SECONDS)
        async with httpx.AsyncClient(base_url=settings.url, timeout=timeout) as client:
            if settings.selfhosted_video_api == "cog":
                model_input = plan.cog_input()
                if job.source_image is not None:
                    model_input["image"] = await asyncio.to_thread(_image_data_uri, job.source_image)
                clip: _Clip = _CogPrediction(client, settings, plan, job.work_dir, model_input)
            else:
                workflow = _workflow_path(settings.selfhosted_comfyui_workflow)
                template = await asyncio.to_thread(load_workflow, workflow)
                clip = _ComfyPrompt(client, settings, plan, job.work_dir, template, workflow)
            try:
                async with asyncio.timeout(time_limit):
                    return await jobs.run(clip)
            except TimeoutError as stop:
                raise ProviderUnavailable(
                    f"{clip.label} did not finish within {time_limit:g} s ({TIMEOUT_ENV})"
                ) from stop


class _Clip(jobs.RemoteJob[dict[str, Any], ClipResult]):
    """One clip on the operator's server; its output files come only from the configured origins."""

    provider = NAME
    max_bytes = MAX_VIDEO_BYTES
    download_seconds = DOWNLOAD_TIMEOUT_SECONDS

    def __init__(self, client: httpx.AsyncClient, settings: SelfHostedSettings, plan: ClipPlan, work_dir: Path) -> None:
        self._client = client
        self._settings = settings
        self._plan = plan
        self._work_dir = work_dir
        self.poll_seconds = settings.selfhosted_video_poll_seconds

    async def _submit(self, path: str, body: Any) -> httpx.Response:
        """POSTs the order once; a refusal that names the wrong server or API is FailedPrecondition."""
        try:
            response = await self._client.post(path, json=body)
        except httpx.HTTPError as error:
            unreachable = ProviderUnavailable(f"{self.label} at {URL_ENV} could not be reached: {error!r}")
            raise jobs.create_failure(unreachable, cause=error) from error
        if response.status_code in (404, 405):
            raise FailedPrecondition(
                f"{self.label}: the server at {URL_ENV} has no POST {path} ({response.status_code}); "
                f"check {URL_ENV} and {API_ENV}"
            )
        return response

    async def _get(self, path: str, **params: str) -> Any:
        """A status read: 429, 409 and 5xx mean "ask again later" (ProviderUnavailable); other failures end the job."""
        try:
            response = await self._client.get(path, params=params)
        except httpx.HTTPError as error:
            raise ProviderUnavailable(f"{self.label} at {URL_ENV} could not be reached: {error!r}") from error
        if not response.is_success:
            error = _status_error(response, self.label)
            if isinstance(error, ProviderUnavailable):
                raise error
            lost = ProviderUnavailable(f"{self.label} lost the job ({response.status_code}): {_detail(response)}")
            raise jobs.JobEnded(lost)
        return _json(response, self.label)

    async def _best_effort(self, path: str, body: Any) -> None:
        try:
            await asyncio.wait_for(self._client.post(path, json=body), CLEANUP_TIMEOUT_SECONDS)
            _LOGGER.info("%s: sent POST %s", self.label, path)
        except Exception as error:  # noqa: BLE001 - the caller is already leaving; a failure is only logged
            _LOGGER.warning("%s: POST %s failed: %r", self.label, path, error)

    async def download(self, url: str) -> Downloaded:
        # The operator configured this server, usually on a private network: its origins are trusted for downloads,
        # and they are the only ones used.
        return await fetch_output(
            url,
            max_bytes=self.max_bytes,
            timeout_seconds=self.download_seconds,
            allowed_origins=self._settings.output_origins,
            origins_setting=OUTPUT_ORIGINS_ENV,
        )

    async def check(self, job: dict[str, Any], output: Downloaded) -> ClipResult:
        mime_type = _video_type(output.data, self.label)
        # Decoded here, inside the job: a clip the service could not decode would otherwise be made again.
        if not (await asyncio.to_thread(probe, io.BytesIO(output.data), f"{self.label} clip")).has_video:
            raise ProviderUnavailable(f"{self.label} returned a file with no picture")
        return ClipResult(
            path=await asyncio.to_thread(write_clip, self._work_dir, output.data),
            mime_type=mime_type,
            model=self.model(job),
            estimated_cost_usd=self._settings.selfhosted_video_usd_per_second * self._plan.seconds,
        )

    def model(self, job: dict[str, Any]) -> str:
        raise NotImplementedError


class _CogPrediction(_Clip):
    """The Cog container API, as Replicate's models speak it inside. Cog keeps no list of predictions, so an order
    whose answer is lost is reported, never sent again."""

    label = f"{NAME} (cog)"

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: SelfHostedSettings,
        plan: ClipPlan,
        work_dir: Path,
        model_input: dict[str, Any],
    ) -> None:
        super().__init__(client, settings, plan, work_dir)
        self._input = model_input

    async def create(self) -> dict[str, Any]:
        # No `Prefer: respond-async`: Cog answers when the prediction ends. Servers that answer at once with
        # `processing` and an id are polled instead.
        response = await self._submit("/predictions", {"input": self._input})
        if not response.is_success:
            # 409: Cog runs one prediction at a time and refuses another while busy.
            raise jobs.create_failure(
                _status_error(response, self.label), status=response.status_code, refused=(409, 429)
            )
        prediction = _json(response, self.label)
        if prediction.get("status") in _PENDING and not prediction.get("id"):
            raise JobFailed(f"{self.label} answered {prediction.get('status')!r} without an id to poll")
        return prediction

    def job_id(self, job: dict[str, Any]) -> str:
        return str(job.get("id") or "(no id)")

    def ended(self, job: dict[str, Any]) -> bool:
        return job.get("status") not in _PENDING

    async def status(self, job: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._get(f"/predictions/{job['id']}"))

    def output_url(self, job: dict[str, Any]) -> str:
        status = job.get("status")
        if status != "succeeded":
            reason = job.get("error") or "no error given"
            raise ProviderUnavailable(f"{self.label}: the prediction ended {status!r}: {str(reason)[:_DETAIL_CHARS]}")
        output = job.get("output")
        first = output[0] if isinstance(output, list) and output else output
        if not isinstance(first, str) or not first:
            raise ProviderUnavailable(f"{self.label}: the prediction succeeded without an output file")
        return first if first.startswith("data:") else str(self._client.base_url.join(first))

    def model(self, job: dict[str, Any]) -> str:
        model = job.get("model")
        return f"{NAME}-cog:{model}" if isinstance(model, str) and model else f"{NAME}-cog"

    async def cancel(self, job: dict[str, Any]) -> None:
        """Cancels a polled prediction; a synchronous one has no id, and closing its connection is all we can do."""
        if job.get("id"):
            await self._best_effort(f"/predictions/{job['id']}/cancel", None)


class _ComfyPrompt(_Clip):
    """ComfyUI's own API: queue a filled-in workflow, wait for its history entry, fetch the video it saved. The
    prompt carries a client_id of its own, by which the queue and the history show whether a lost order arrived."""

    label = f"{NAME} (comfyui)"
    can_find = True

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: SelfHostedSettings,
        plan: ClipPlan,
        work_dir: Path,
        template: dict[str, Any],
        workflow: Path,
    ) -> None:
        super().__init__(client, settings, plan, work_dir)
        self._template = template
        self._workflow = workflow
        self._graph = fill_workflow(template, plan.placeholders(), workflow)
        self._client_id = uuid.uuid4().hex

    async def create(self) -> dict[str, Any]:
        response = await self._submit("/prompt", {"prompt": self._graph, "client_id": self._client_id})
        if response.status_code == 400:
            raise FailedPrecondition(_refusal(response, self._workflow))
        if not response.is_success:
            raise jobs.create_failure(_status_error(response, self.label), status=response.status_code)
        queued = _json(response, self.label)
        prompt_id = str(queued.get("prompt_id") or "")
        if not prompt_id:
            raise JobFailed(f"{self.label}: POST /prompt answered without a prompt_id")
        _LOGGER.info("%s: queued prompt %s (number %s)", self.label, prompt_id, queued.get("number"))
        return {"prompt_id": prompt_id}

    async def find(self) -> dict[str, Any] | None:
        """The prompt with this order's client_id, queued, running or in the history; None when none has it.

        Queue items and history entries hold the prompt as [number, prompt_id, graph, extra_data, outputs], and
        ComfyUI puts the order's client_id into extra_data.
        """
        queue = await self._get("/queue")
        history = await self._get("/history")
        items = [*(queue.get("queue_running") or []), *(queue.get("queue_pending") or [])]
        items += [entry.get("prompt") for entry in history.values() if isinstance(entry, dict)]
        for item in items:
            if isinstance(item, list) and len(item) > 3 and isinstance(item[3], dict):
                if item[3].get("client_id") == self._client_id:
                    return {"prompt_id": str(item[1])}
        return None

    def job_id(self, job: dict[str, Any]) -> str:
        return str(job["prompt_id"])

    def ended(self, job: dict[str, Any]) -> bool:
        return "entry" in job

    async def status(self, job: dict[str, Any]) -> dict[str, Any]:
        prompt_id = self.job_id(job)
        # /history/{id} is {} until the prompt has run (or failed).
        entry = (await self._get(f"/history/{prompt_id}")).get(prompt_id)
        return {"prompt_id": prompt_id, "entry": entry} if entry else job

    def output_url(self, job: dict[str, Any]) -> str:
        entry = job["entry"]
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            raise ProviderUnavailable(f"{self.label}: the workflow failed: {_execution_error(status)}")
        video = find_video(entry.get("outputs") or {})
        if video is None:
            raise FailedPrecondition(
                f"{self.label}: the workflow {self._workflow} finished without a video output; end it with a node "
                "that saves MP4 (core SaveVideo, or VideoHelperSuite VHS_VideoCombine)"
            )
        params = {
            "filename": video["filename"],
            "subfolder": video.get("subfolder") or "",
            "type": video.get("type") or "output",
        }
        return str(self._client.build_request("GET", "/view", params=params).url)

    def model(self, job: dict[str, Any]) -> str:
        model = template_model(self._template)
        return f"{NAME}-comfyui:{model}" if model else f"{NAME}-comfyui"

    async def cancel(self, job: dict[str, Any]) -> None:
        """Drops the prompt from the queue, or interrupts it if running (older ComfyUI interrupts whatever runs)."""
        await self._best_effort("/queue", {"delete": [self.job_id(job)]})
        await self._best_effort("/interrupt", {"prompt_id": self.job_id(job)})


def _workflow_path(setting: str) -> Path:
    path = Path(setting.strip())
    if not path.name:
        raise FailedPrecondition(
            f"{NAME} (comfyui) needs {WORKFLOW_ENV}: a ComfyUI workflow in API format with {{{{prompt}}}}-style "
            "placeholders (see deploy/comfyui/ltx-video-workflow.json)"
        )
    return path


def load_workflow(path: Path) -> dict[str, Any]:
    """Reads a workflow template; every problem is the operator's to fix, so it is a FailedPrecondition."""
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FailedPrecondition(f"{WORKFLOW_ENV}: cannot read the ComfyUI workflow {path}: {error}") from error
    if isinstance(graph, dict) and isinstance(graph.get("nodes"), list):
        raise FailedPrecondition(
            f"{WORKFLOW_ENV}: {path} is a UI-format workflow; export it with ComfyUI's 'Save (API Format)'"
        )
    if (
        not isinstance(graph, dict)
        or not graph
        or not all(isinstance(node, dict) and "class_type" in node for node in graph.values())
    ):
        raise FailedPrecondition(
            f"{WORKFLOW_ENV}: {path} is not a ComfyUI API-format workflow (an object of nodes with class_type)"
        )
    return graph


def fill_workflow(
    template: dict[str, Any], values: dict[str, str | int], path: Path, setting: str = WORKFLOW_ENV
) -> dict[str, Any]:
    """Replaces `{{name}}` strings in the parsed graph: a whole-string placeholder takes the value's own JSON type
    (numbers stay numbers), one inside longer text is substituted as text. The graph is never built as a string.
    `setting` names the variable that points at the template (the RunPod provider fills its input template too).
    """
    unknown: set[str] = set()
    used: set[str] = set()

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value) for value in node]
        if not isinstance(node, str):
            return node
        names = _PLACEHOLDER.findall(node)
        unknown.update(name for name in names if name not in values)
        used.update(name for name in names if name in values)
        whole = _PLACEHOLDER.fullmatch(node.strip())
        if whole is not None and whole.group(1) in values:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda match: str(values.get(match.group(1), match.group(0))), node)

    graph = fill(template)
    if unknown:
        raise FailedPrecondition(
            f"{setting}: {path} uses unknown placeholders {sorted(unknown)}; known: {sorted(values)}"
        )
    if "prompt" not in used:
        raise FailedPrecondition(f"{setting}: {path} has no {{{{prompt}}}} placeholder, so it ignores the scene")
    return graph


def find_video(outputs: dict[str, Any]) -> dict[str, Any] | None:
    """The first video file among the output nodes: VideoHelperSuite lists it under `gifs`, core SaveVideo under
    `images` (with `animated`). Files are recognised by their format or extension, so still images are skipped.
    """
    for node in outputs.values():
        if not isinstance(node, dict):
            continue
        for key in ("gifs", "images", "videos"):
            for item in node.get(key) or []:
                if isinstance(item, dict) and isinstance(item.get("filename"), str) and _is_video(item):
                    return item
    return None


def _is_video(item: dict[str, Any]) -> bool:
    return str(item.get("format", "")).startswith("video/") or item["filename"].lower().endswith(
        (".mp4", ".webm", ".mov", ".mkv")
    )


def template_model(graph: dict[str, Any]) -> str:
    """The model file the template loads, for metadata; empty when no loader names one."""
    for node in graph.values():
        inputs = node.get("inputs") or {}
        for key in _MODEL_INPUTS:
            if isinstance(inputs.get(key), str):
                return str(inputs[key])
    return ""


def _refusal(response: httpx.Response, path: Path) -> str:
    """ComfyUI's 400 for a graph it will not run: `{"error": {...}, "node_errors": {id: {class_type, errors}}}`."""
    body = _json_or_none(response)
    if not isinstance(body, dict):
        return f"ComfyUI refused the workflow {path} ({WORKFLOW_ENV}): {_detail(response)}"
    error = body.get("error")
    summary = error.get("message", "") if isinstance(error, dict) else str(error or "")
    nodes = []
    for node_id, node in (body.get("node_errors") or {}).items():
        if not isinstance(node, dict):
            continue
        problems = "; ".join(
            f"{e.get('message', '')}: {e.get('details', '')}".strip(": ")
            for e in node.get("errors") or []
            if isinstance(e, dict)
        )
        nodes.append(f"node {node_id} ({node.get('class_type', '?')}): {problems}")
    message = f"ComfyUI refused the workflow {path} ({WORKFLOW_ENV}): {summary}"
    if nodes:
        message += "; " + "; ".join(nodes)
    return message[: _DETAIL_CHARS * 2]


def _execution_error(status: dict[str, Any]) -> str:
    for message in status.get("messages") or []:
        if isinstance(message, list) and len(message) == 2 and message[0] == "execution_error":
            detail = message[1] if isinstance(message[1], dict) else {}
            return (
                f"node {detail.get('node_id', '?')} ({detail.get('node_type', '?')}): "
                f"{detail.get('exception_type', '')} {detail.get('exception_message', '')}".strip()
            )[:_DETAIL_CHARS]
    return "no execution_error message given"


def _status_error(response: httpx.Response, label: str) -> ScenecastError:
    """The error mapping shared by both wires: 429 throttled, 409 busy and 5xx retryable, other 4xx the input."""
    code, detail = response.status_code, _detail(response)
    if code == 409:  # Cog runs one prediction at a time and answers 409 while busy
        return ProviderUnavailable(
            f"{label} is busy with another job (409): {detail}",
            retry_after_seconds(response.headers.get("retry-after")),
        )
    return http_status_error(
        response,
        throttled=f"{label} throttled the request (429): {detail}",
        failed=f"{label} failed ({code}): {detail}",
        denied=f"{label} refused access ({code}): {detail}; check the server's access rules",
        refused=f"{label} refused the input ({code}): {detail}",
    )


def _detail(response: httpx.Response) -> str:
    """The server's own message: Cog (FastAPI) `detail`, ComfyUI `error`, or the text."""
    body = _json_or_none(response)
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:_DETAIL_CHARS]
            if isinstance(value, list) and value:  # FastAPI validation: [{"loc": [...], "msg": "..."}]
                return "; ".join(
                    f"{'.'.join(map(str, item.get('loc', [])))}: {item.get('msg', '')}"
                    if isinstance(item, dict)
                    else str(item)
                    for item in value
                )[:_DETAIL_CHARS]
            if isinstance(value, dict) and value.get("message"):
                return str(value["message"])[:_DETAIL_CHARS]
    return response.text[:_DETAIL_CHARS] or "no detail given"


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _json(response: httpx.Response, label: str) -> dict[str, Any]:
    body = _json_or_none(response)
    if not isinstance(body, dict):
        raise ProviderUnavailable(f"{label} answered {response.status_code} with a body that is not a JSON object")
    return body


def _image_data_uri(path: Path) -> str:
    """The source image as sent by the caller, as a data: URI typed from its bytes."""
    try:
        with Image.open(path) as image:
            mime_type = Image.MIME.get(image.format or "", "")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as error:
        raise InvalidArgument(f"source_image: not a readable image ({error})") from error
    if not mime_type:
        raise InvalidArgument("source_image: the image format has no MIME type; send PNG or JPEG")
    return f"data:{mime_type};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _video_type(data: bytes, label: str) -> str:
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm"
    raise ProviderUnavailable(f"{label} returned {len(data)} bytes that are not an MP4 or WebM video")

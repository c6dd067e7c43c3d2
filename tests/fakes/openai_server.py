"""A fake OpenAI API (Images, Speech and Chat Completions with structured outputs) with the documented shapes, for the
real openai SDK to talk to."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import math
import re
import struct
import time
import wave
from collections.abc import Awaitable, Callable
from typing import Any

import imageio_ffmpeg
import jsonschema
from aiohttp import web
from PIL import Image

from tests.fakes.base import FakeServer

DALL_E_3 = {
    "sizes": {"1024x1024", "1792x1024", "1024x1792"},
    "qualities": {"standard", "hd"},
    "max_prompt": 4000,
    "max_n": 1,
}
GPT_IMAGE = {
    "sizes": {"1024x1024", "1536x1024", "1024x1536", "auto"},
    "qualities": {"low", "medium", "high", "auto"},
    "max_prompt": 32000,
    "max_n": 10,
}
IMAGE_MODELS = {"dall-e-3": DALL_E_3, "gpt-image-1": GPT_IMAGE, "gpt-image-1-mini": GPT_IMAGE}
GPT_IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
# Chat models, and the dated snapshot each answers as (OpenAI reports the snapshot in `model`).
CHAT_MODELS = {"gpt-4.1-mini": "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14"}
CHAT_REFUSAL = "I'm sorry, but I can't help with that request."
# What the fake model writes, one per chat call, in order (then "valid"): a script within the schema, a refusal,
# text that is not JSON, an answer cut at max_completion_tokens, or a script whose scene breaks the script format
# (empty narration) or its limits (a 5000-character narration).
CHAT_ANSWERS = ("valid", "refusal", "not_json", "cut", "empty_narration", "long_narration")
# Response format names: 1-64 characters of a-z, A-Z, 0-9, _ and -.
_SCHEMA_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
SPEECH_MODELS = {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15"}
VOICES = {
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
}
# FFmpeg output options and Content-Type per compressed response_format; wav and pcm are written directly.
ENCODINGS = {
    "mp3": (["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"], "audio/mpeg"),
    "opus": (["-c:a", "libopus", "-f", "ogg"], "audio/ogg"),
    "aac": (["-c:a", "aac", "-f", "adts"], "audio/aac"),
    "flac": (["-c:a", "flac", "-f", "flac"], "audio/flac"),
}

SAMPLE_RATE = 24000  # OpenAI speech is 24 kHz mono 16-bit
MS_PER_CHARACTER = 60
# The colour of every image, so tests can tell the fake's pixels from anything else.
COLOUR = (40, 120, 200)
CONTENT_POLICY_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by "
    "our safety system."
)


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The documented error shape, shared by every OpenAI endpoint."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def rate_limit_body(model: str = "dall-e-3") -> dict[str, Any]:
    """What a 429 carries (for tests to inject as a Fault body)."""
    return error_body(
        f"Rate limit exceeded for images per minute in organization org-fake. Limit: 5/1min. ({model})",
        type_="requests",
        code="rate_limit_exceeded",
    )


def image_bytes(width: int, height: int, pil_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), COLOUR).save(buffer, format=pil_format)
    return buffer.getvalue()


def tone_wav(characters: int, speed: float = 1.0) -> bytes:
    """A soft 440 Hz tone, 60 ms per input character at speed 1, as 24 kHz mono 16-bit WAV."""
    frames = round(characters * MS_PER_CHARACTER / speed * SAMPLE_RATE / 1000)
    period = [round(3000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)) for i in range(SAMPLE_RATE // 20)]
    samples = (period * (frames // len(period) + 1))[:frames]  # 50 ms of 440 Hz repeats seamlessly
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(struct.pack(f"<{frames}h", *samples))
    return buffer.getvalue()


async def encode(wav: bytes, options: list[str]) -> bytes:
    """Re-encodes a WAV with the imageio-ffmpeg binary, piped through stdin and stdout."""
    process = await asyncio.create_subprocess_exec(
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "wav",
        "-i",
        "pipe:0",
        *options,
        "pipe:1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await process.communicate(wav)
    if process.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {errors.decode(errors='replace')}")
    return output


class Rejected(Exception):
    """A request the real API would refuse: becomes the documented JSON error."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


class FakeOpenAI(FakeServer):
    """Knobs: `retired_models` answer 404 model_not_found; prompts containing `refuse_marker` get a content-policy
    400; `malformed` makes successes broken (invalid base64, empty audio). Faults come from `add_fault`.
    """

    def __init__(self, api_key: str = "sk-fake-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.refuse_marker = "FORBIDDEN"
        self.retired_models: set[str] = set()
        self.malformed = False
        self._files: dict[str, bytes] = {}
        self._ids = itertools.count(1)
        # The next chat answers (CHAT_ANSWERS), consumed in order; "valid" when empty.
        self.chat_answers: list[str] = []
        # The id and usage of every chat completion answered, in order: what the caller is billed for.
        self.chat_calls: list[dict[str, Any]] = []

    def reset(self) -> None:
        super().reset()
        self.retired_models = set()
        self.malformed = False
        self.chat_answers = []
        self.chat_calls = []

    def service_env(self) -> dict[str, str]:
        """The variables that point a service's OpenAI providers at this fake."""
        return {"OPENAI_API_KEY": self.api_key, "OPENAI_BASE_URL": f"{self.base_url}/v1"}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/images/generations", self._guarded(self._images))
        app.router.add_post("/v1/audio/speech", self._guarded(self._speech))
        app.router.add_post("/v1/chat/completions", self._guarded(self._chat))
        app.router.add_get("/files/{name}", self._file)

    def _guarded(
        self, handler: Callable[[dict[str, Any]], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """Checks the key and turns Rejected into the documented error response."""

        async def guarded(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                given = request.headers.get("Authorization", "").removeprefix("Bearer ")
                message = (
                    f"Incorrect API key provided: {given[:3]}***{given[-4:]}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys."
                )
                return web.json_response(error_body(message, code="invalid_api_key"), status=401)
            try:
                body = await request.json()
            except ValueError:
                body = None
            try:
                if not isinstance(body, dict):
                    raise Rejected(400, "We could not parse the JSON body of your request.")
                if body.get("model") in self.retired_models:
                    raise Rejected(
                        404,
                        f"The model `{body['model']}` does not exist or you do not have access to it.",
                        code="model_not_found",
                    )
                return await handler(body)
            except Rejected as rejected:
                return web.json_response(
                    error_body(str(rejected), param=rejected.param, code=rejected.code), status=rejected.status
                )

        return guarded

    async def _images(self, body: dict[str, Any]) -> web.Response:
        model = body.get("model", "dall-e-2")
        if model not in IMAGE_MODELS:
            raise Rejected(
                404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            )
        rules = IMAGE_MODELS[model]
        dalle = model == "dall-e-3"
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise Rejected(400, "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
        if len(prompt) > rules["max_prompt"]:
            raise Rejected(
                400,
                f"Invalid 'prompt': string too long. Expected a string with maximum length "
                f"{rules['max_prompt']}, but got a string with length {len(prompt)} instead.",
                "prompt",
                "string_above_max_length",
            )
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= rules["max_n"]:
            raise Rejected(
                400, f"Invalid 'n': integer must be from 1 to {rules['max_n']} for {model}.", "n", "invalid_value"
            )
        size = body.get("size", "1024x1024" if dalle else "auto")
        quality = body.get("quality", "standard" if dalle else "auto")
        for param, value, allowed in (("size", size, rules["sizes"]), ("quality", quality, rules["qualities"])):
            if value not in allowed:
                raise Rejected(
                    400,
                    f"Invalid value: '{value}'. Supported values are: {', '.join(repr(v) for v in sorted(allowed))}.",
                    param,
                    "invalid_value",
                )
        # Parameters the other family has: the real API names the first unknown one.
        foreign = (
            ("output_format", "output_compression", "background", "moderation")
            if dalle
            else ("response_format", "style")
        )
        for param in foreign:
            if param in body:
                raise Rejected(400, f"Unknown parameter: '{param}'.", param, "unknown_parameter")
        output_format = "png" if dalle else body.get("output_format", "png")
        if output_format not in GPT_IMAGE_FORMATS:
            raise Rejected(
                400,
                f"Invalid value: '{output_format}'. Supported values are: 'png', 'jpeg' and 'webp'.",
                "output_format",
                "invalid_value",
            )
        response_format = body.get("response_format", "url") if dalle else "b64_json"
        if response_format not in ("url", "b64_json"):
            raise Rejected(
                400,
                f"Invalid value: '{response_format}'. Supported values are: 'url' and 'b64_json'.",
                "response_format",
                "invalid_value",
            )
        if self.refuse_marker in prompt:
            raise Rejected(400, CONTENT_POLICY_MESSAGE, code="content_policy_violation")

        width, height = (int(side) for side in ("1024x1024" if size == "auto" else size).split("x"))
        picture = image_bytes(width, height, GPT_IMAGE_FORMATS[output_format])
        item: dict[str, Any] = {}
        if response_format == "url":
            name = f"img-{next(self._ids)}.png"
            self._files[name] = picture
            item["url"] = f"{self.base_url}/files/{name}"
        else:
            item["b64_json"] = "not base64!" if self.malformed else base64.b64encode(picture).decode()
        if dalle:
            item["revised_prompt"] = f"A detailed picture: {prompt}"
        answer: dict[str, Any] = {"created": int(time.time()), "data": [dict(item) for _ in range(n)]}
        if not dalle:
            tokens = len(prompt.split())
            answer.update(
                background="opaque",
                output_format=output_format,
                size=f"{width}x{height}",
                quality="medium" if quality == "auto" else quality,
                usage={
                    "input_tokens": tokens,
                    "input_tokens_details": {"text_tokens": tokens, "image_tokens": 0},
                    "output_tokens": 272,
                    "total_tokens": tokens + 272,
                },
            )
        return web.json_response(answer)

    async def _speech(self, body: dict[str, Any]) -> web.Response:
        model = body.get("model")
        if model not in SPEECH_MODELS:
            raise Rejected(
                404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            )
        text = body.get("input")
        if not isinstance(text, str) or not text:
            raise Rejected(400, "Missing required parameter: 'input'.", "input", "missing_required_parameter")
        if len(text) > 4096:
            raise Rejected(
                400,
                "[{'type': 'string_too_long', 'loc': ('body', 'input'), 'msg': 'String should have "
                "at most 4096 characters'}]",
                "input",
                "string_above_max_length",
            )
        voice = body.get("voice")
        if voice not in VOICES and not (isinstance(voice, dict) and str(voice.get("id", "")).startswith("voice_")):
            raise Rejected(
                400,
                f"Invalid value: '{voice}'. Supported values are: {', '.join(repr(v) for v in sorted(VOICES))}.",
                "voice",
                "invalid_value",
            )
        audio_format = body.get("response_format", "mp3")
        if audio_format not in (*ENCODINGS, "wav", "pcm"):
            raise Rejected(
                400,
                f"Invalid value: '{audio_format}'. Supported values are: 'mp3', 'opus', 'aac', "
                "'flac', 'wav', and 'pcm'.",
                "response_format",
                "invalid_value",
            )
        speed = body.get("speed", 1.0)
        if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
            raise Rejected(400, f"Invalid 'speed': {speed} is not between 0.25 and 4.0.", "speed", "invalid_value")
        if body.get("stream_format") == "sse" and model in ("tts-1", "tts-1-hd"):
            raise Rejected(
                400, f"stream_format 'sse' is not supported for {model}.", "stream_format", "unsupported_value"
            )

        wav = tone_wav(len(text), speed)
        if audio_format == "wav":
            audio, content_type = wav, "audio/wav"
        elif audio_format == "pcm":
            audio, content_type = wav[44:], "audio/pcm"  # the data after the 44-byte header written by `wave`
        else:
            options, content_type = ENCODINGS[audio_format]
            audio = await encode(wav, options)
        return web.Response(body=b"" if self.malformed else audio, content_type=content_type)

    async def _chat(self, body: dict[str, Any]) -> web.Response:
        model = body.get("model")
        if model not in CHAT_MODELS:
            raise Rejected(
                404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise Rejected(400, "Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
        schema = _strict_schema(body.get("response_format"))
        max_tokens = body.get("max_completion_tokens")
        kind = self.chat_answers.pop(0) if self.chat_answers else "valid"
        topic = str(messages[-1].get("content", "")).splitlines()[0] if isinstance(messages[-1], dict) else ""
        script = {
            "title": f"All about {topic[:60]}",
            "scenes": [
                {
                    "title": f"Part {number}",
                    "narration": f"This is part {number} of the story. It explains one idea clearly.",
                    "visual": f"A bright illustration of idea number {number}, seen from above",
                }
                for number in (1, 2, 3)
            ],
        }
        if kind == "empty_narration":
            script["scenes"][1]["narration"] = ""
        elif kind == "long_narration":
            script["scenes"][0]["narration"] = "word " * 1000
        if kind in ("valid", "empty_narration", "long_narration"):
            jsonschema.validate(script, schema)  # strict mode: what the model writes always fits the schema
        content: str | None = json.dumps(script)
        finish_reason, refusal = "stop", None
        if kind == "refusal":
            content, refusal = None, CHAT_REFUSAL
        elif kind == "not_json":
            content = "Sure! Here is your script: title: Tides"
        elif kind == "cut":
            content, finish_reason = content[: len(content) // 2], "length"
        usage = {
            "prompt_tokens": len(json.dumps(messages)) // 4 + 20,
            "completion_tokens": len(content or refusal or "") // 4 + 1,
        }
        if isinstance(max_tokens, int) and usage["completion_tokens"] > max_tokens:
            usage["completion_tokens"], finish_reason = max_tokens, "length"
        completion_id = f"chatcmpl-fake{next(self._ids)}"
        self.chat_calls.append({"id": completion_id, **usage})
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": CHAT_MODELS[model],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    **usage,
                    "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
                },
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
            }
        )

    async def _file(self, request: web.Request) -> web.Response:
        data = self._files.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/png")


def _strict_schema(response_format: Any) -> dict[str, Any]:
    """The schema of a json_schema response format, refused (400, as OpenAI does) unless it is valid for strict mode:
    a name of [a-zA-Z0-9_-], and every object closed (additionalProperties false) with all its properties required."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        raise Rejected(
            400, "This fake answers structured outputs only: response_format json_schema.", "response_format"
        )
    spec = response_format.get("json_schema") or {}
    if not _SCHEMA_NAME.fullmatch(str(spec.get("name", ""))):
        raise Rejected(400, "Invalid 'response_format.json_schema.name'.", "response_format.json_schema.name")
    if spec.get("strict") is not True or not isinstance(spec.get("schema"), dict):
        raise Rejected(400, "Expected a strict json_schema with a schema object.", "response_format")

    def check(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object":
                if node.get("additionalProperties") is not False:
                    raise Rejected(
                        400,
                        f"Invalid schema for response_format '{spec['name']}': In context=({path}), "
                        "'additionalProperties' is required to be supplied and to be false.",
                        "response_format",
                    )
                if sorted(node.get("required", [])) != sorted(node.get("properties", {})):
                    raise Rejected(
                        400,
                        f"Invalid schema for response_format '{spec['name']}': In context=({path}), 'required' is "
                        "required to be supplied and to be an array including every key in properties.",
                        "response_format",
                    )
            for key, value in node.items():
                check(value, f"{path}, {key!r}" if path else repr(key))
        elif isinstance(node, list):
            for item in node:
                check(item, path)

    check(spec["schema"], "")
    return dict(spec["schema"])

"""A fake Kokoro-FastAPI server: `/v1/audio/speech` (OpenAI shape) and `/dev/captioned_speech`, as
docs/providers/kokoro-fastapi.md describes them, with knobs for the failures a real server (or its proxy) shows."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer
from tests.fakes.openai_server import MS_PER_CHARACTER, tone_wav

VOICES = ("af_heart", "af_bella", "af_sky", "am_adam", "bf_isabella", "bm_george")
# OpenAI's names, which Kokoro-FastAPI maps to its own voices.
OPENAI_VOICES = {"alloy": "am_adam", "echo": "af_bella", "nova": "bf_isabella"}
MODELS = ("kokoro", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
_WORD = re.compile(r"\S+")


def error_body(message: str, error: str = "validation_error") -> dict[str, Any]:
    """Kokoro-FastAPI's error shape."""
    return {"detail": {"error": error, "message": message, "type": "invalid_request_error"}}


def word_timestamps(text: str) -> list[dict[str, Any]]:
    """Each word's time in the fake's audio (MS_PER_CHARACTER per character of the text), in seconds, with the
    punctuation split off as Kokoro's tokenizer does."""
    stamps = []
    for match in _WORD.finditer(text):
        word = match.group().rstrip(".,!?;:")
        start, end = match.start() * MS_PER_CHARACTER / 1000, (match.start() + len(word)) * MS_PER_CHARACTER / 1000
        stamps.append({"word": word, "start_time": start, "end_time": end})
        if len(word) < len(match.group()):
            stamps.append({"word": match.group()[len(word) :], "start_time": end, "end_time": end})
    return stamps


class FakeKokoroServer(FakeServer):
    """Knobs: `api_key` (a proxy's Bearer key, 401 without it), `captions` (False: an older server with no
    `/dev/captioned_speech`, answering 404), `corrupt` (answers bytes that are not audio). Faults (tests.fakes.base)
    give 429, 500 and slow answers."""

    def __init__(self, api_key: str = "") -> None:
        super().__init__()
        self.api_key = api_key
        self.captions = True
        self.corrupt = False

    def reset(self) -> None:
        super().reset()
        self.captions = True
        self.corrupt = False

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/dev/captioned_speech", self._captioned)

    def _refusal(self, request: web.Request, body: Any) -> web.Response | None:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"detail": "Unauthorized"}, status=401)
        if not isinstance(body, dict) or not isinstance(body.get("input"), str) or not body["input"]:
            return web.json_response(error_body("input: Field required"), status=422)
        if body.get("model", "kokoro") not in MODELS:
            return web.json_response(error_body(f"Unsupported model: {body.get('model')}", "invalid_model"), status=400)
        voice = body.get("voice", "af_heart")
        # A mix like "af_bella(2)+af_sky": every voice in it must exist.
        names = [re.sub(r"\(\d+(\.\d+)?\)$", "", part.strip()) for part in re.split(r"[+-]", str(voice))]
        if any(OPENAI_VOICES.get(name, name) not in VOICES for name in names):
            return web.json_response(error_body(f"Voice '{voice}' not found"), status=400)
        if body.get("response_format", "mp3") != "wav":
            return web.json_response(error_body("the fake speaks only wav"), status=400)
        return None

    def _audio(self, text: str) -> bytes:
        return b"ID3\x00 not audio at all" if self.corrupt else tone_wav(len(text))

    async def _speech(self, request: web.Request) -> web.Response:
        body = await request.json()
        refusal = self._refusal(request, body)
        if refusal is not None:
            return refusal
        return web.Response(body=self._audio(body["input"]), content_type="audio/wav")

    async def _captioned(self, request: web.Request) -> web.Response:
        if not self.captions:
            return web.json_response({"detail": "Not Found"}, status=404)
        body = await request.json()
        refusal = self._refusal(request, body)
        if refusal is not None:
            return refusal
        answer: dict[str, Any] = {
            "audio": base64.b64encode(self._audio(body["input"])).decode(),
            "audio_format": "audio/wav",
        }
        if body.get("return_timestamps", True):
            answer["timestamps"] = word_timestamps(body["input"])
        if body.get("stream", True):  # the server's default: one JSON object per line per chunk
            return web.Response(text=json.dumps(answer) + "\n", content_type="application/x-ndjson")
        return web.json_response(answer)

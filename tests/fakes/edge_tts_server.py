"""A fake of the Read Aloud websocket that edge-tts speaks to: config and SSML in, MP3 and word boundaries out."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import subprocess
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import imageio_ffmpeg
from aiohttp import WSCloseCode, WSMsgType, web

from tests.fakes.base import FakeServer, Fault

PATH = "/consumer/speech/synthesize/readaloud/edge/v1"
# The public token every Edge browser sends; the real service rejects connections without it.
TRUSTED_CLIENT_TOKEN = "6A5AA1D4EAFF4E9FB37E23D68491D6F4"
# Documented voices the fake speaks; any other well-formed name gets no audio, as from the real service.
VOICES = frozenset(
    {"en-US-AriaNeural", "en-US-GuyNeural", "en-US-JennyNeural", "en-US-EmmaMultilingualNeural", "en-GB-SoniaNeural"}
)

# The audio: a lead-in, then per word a tone and a gap, as 24 kHz mono MP3 at 48 kbit/s (the service's
# audio-24khz-48kbitrate-mono-mp3). Milliseconds.
LEAD_IN_MS = 100
WORD_MS = 300
GAP_MS = 100
SAMPLE_RATE = 24000
BYTES_PER_MS = 48_000 // 8 // 1000
# LAME's priming delay in samples, trimmed from the source so the decoded tones start at the announced offsets.
ENCODER_DELAY_SAMPLES = 1105
# Binary messages carry ten 144-byte MP3 frames (240 ms) each.
CHUNK_BYTES = 1440
TICKS_PER_MS = 10_000

_VOICE_NAME = re.compile(r"^Microsoft Server Speech Text to Speech Voice \(([^,]+), (.+)\)$")
_WORD = re.compile(r"\w+(?:['’]\w+)*")
_SEC_MS_GEC = re.compile(r"^[0-9A-Fa-f]{16}-[0-9A-Fa-f]{64}$")


@dataclass(frozen=True)
class Utterance:
    """One SSML request as received: the voice's short name, the plain text, and the SSML itself."""

    voice: str
    text: str
    ssml: str


@dataclass(frozen=True)
class Word:
    text: str
    start_ms: int
    end_ms: int


def words_of(text: str) -> list[Word]:
    """The word boundaries the fake announces for `text`; punctuation gets none, as with the real service."""
    return [
        Word(match, LEAD_IN_MS + index * (WORD_MS + GAP_MS), LEAD_IN_MS + index * (WORD_MS + GAP_MS) + WORD_MS)
        for index, match in enumerate(_WORD.findall(text))
    ]


def tone_command(ffmpeg: str, word_count: int) -> list[str]:
    """The FFmpeg command that writes the MP3 for `word_count` words to stdout, as data."""
    period, tone, lead = (WORD_MS + GAP_MS) / 1000, WORD_MS / 1000, LEAD_IN_MS / 1000
    seconds = lead + word_count * period
    expression = f"gte(t,{lead})*lt(mod(t-{lead},{period}),{tone})*0.3*sin(2*PI*440*t)"
    return [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"aevalsrc=exprs='{expression}':s={SAMPLE_RATE}:d={seconds},atrim=start_sample={ENCODER_DELAY_SAMPLES}",
        "-ac",
        "1",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "48k",
        # A bare stream of MP3 frames, as the service sends: no ID3 tag, no Xing header.
        "-id3v2_version",
        "0",
        "-write_xing",
        "0",
        "-f",
        "mp3",
        "pipe:1",
    ]


@functools.lru_cache(maxsize=16)
def tone_mp3(word_count: int) -> bytes:
    return subprocess.run(
        tone_command(imageio_ffmpeg.get_ffmpeg_exe(), word_count), capture_output=True, check=True, timeout=30
    ).stdout


class FakeEdgeTTS(FakeServer):
    """Knobs: `fail_handshakes` (HTTP status for the next connections), `cut_streams`, `reject_voice`.

    `utterances` records every SSML request; `connections()` counts websocket handshakes, failed ones included.
    """

    def __init__(self) -> None:
        super().__init__()
        self.utterances: list[Utterance] = []
        self.rejected_voices: set[str] = set()
        self._cuts = 0

    @property
    def wss_url(self) -> str:
        """What EDGE_TTS_WSS_URL should be: edge-tts appends `&ConnectionId=...` to it."""
        return f"ws://127.0.0.1:{self.port}{PATH}?TrustedClientToken={TRUSTED_CLIENT_TOKEN}"

    def fail_handshakes(self, status: int, count: int = 1) -> None:
        for _ in range(count):
            self.add_fault(Fault(PATH, status=status, body=f"fake edge-tts: HTTP {status}"))

    def cut_streams(self, count: int = 1) -> None:
        """The next `count` turns close the socket halfway through the audio, before turn.end."""
        with self._lock:
            self._cuts += count

    def reject_voice(self, voice: str) -> None:
        with self._lock:
            self.rejected_voices.add(voice)

    def connections(self) -> int:
        return len(self.requests_to(PATH))

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.utterances.clear()
            self.rejected_voices.clear()
            self._cuts = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get(PATH, self._synthesize)

    async def _synthesize(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if query.get("TrustedClientToken") != TRUSTED_CLIENT_TOKEN or not _SEC_MS_GEC.match(
            query.get("Sec-MS-GEC", "")
        ):
            return web.Response(status=403, text="fake edge-tts: bad client token")
        websocket = web.WebSocketResponse()
        await websocket.prepare(request)
        word_boundaries = False
        async for message in websocket:
            if message.type != WSMsgType.TEXT:
                continue
            headers, body = _split_text_frame(message.data)
            if headers.get("Path") == "speech.config":
                options = json.loads(body)["context"]["synthesis"]["audio"]["metadataoptions"]
                word_boundaries = options.get("wordBoundaryEnabled") == "true"
            elif headers.get("Path") == "ssml" and not await self._speak(
                websocket, headers.get("X-RequestId", ""), body, word_boundaries
            ):
                break
        return websocket

    async def _speak(self, websocket: web.WebSocketResponse, request_id: str, ssml: str, word_boundaries: bool) -> bool:
        """Answers one SSML request; False when the socket was closed instead."""
        voice, text = _parse_ssml(ssml)
        with self._lock:
            self.utterances.append(Utterance(voice, text, ssml))
            rejected = voice not in VOICES or voice in self.rejected_voices
            cut = self._cuts > 0
            if cut:
                self._cuts -= 1
        if rejected:
            await websocket.close()
            return False
        words = words_of(text)
        audio = await asyncio.to_thread(tone_mp3, len(words))
        stream_id = uuid.uuid4().hex.upper()
        await websocket.send_str(_text_frame(request_id, "turn.start", {"context": {"serviceTag": stream_id}}))
        response = {"context": {"serviceTag": stream_id}, "audio": {"type": "inline", "streamId": stream_id}}
        await websocket.send_str(_text_frame(request_id, "response", response))
        pending = list(words) if word_boundaries else []
        chunks = [audio[i : i + CHUNK_BYTES] for i in range(0, len(audio), CHUNK_BYTES)]
        for index, chunk in enumerate(chunks):
            if cut and index == len(chunks) // 2:
                await websocket.close(code=WSCloseCode.INTERNAL_ERROR, message=b"fake edge-tts: cut")
                return False
            # Each word is announced just before the chunk in which it starts, as the service interleaves them.
            chunk_end_ms = (index + 1) * CHUNK_BYTES / BYTES_PER_MS
            while pending and pending[0].start_ms < chunk_end_ms:
                await websocket.send_str(_text_frame(request_id, "audio.metadata", _metadata(pending.pop(0))))
            await websocket.send_bytes(_audio_frame(request_id, stream_id, chunk))
        # The service ends the audio with an empty binary message that has no Content-Type.
        await websocket.send_bytes(_audio_frame(request_id, stream_id, b""))
        await websocket.send_str(_text_frame(request_id, "turn.end", {"context": {"serviceTag": stream_id}}))
        return True


def _split_text_frame(frame: str) -> tuple[dict[str, str], str]:
    head, _, body = frame.partition("\r\n\r\n")
    return dict(line.split(":", 1) for line in head.split("\r\n") if ":" in line), body


def _text_frame(request_id: str, path: str, body: object) -> str:
    return (
        f"X-RequestId:{request_id}\r\nContent-Type:application/json; charset=utf-8\r\nPath:{path}\r\n\r\n"
        f"{json.dumps(body)}"
    )


def _audio_frame(request_id: str, stream_id: str, data: bytes) -> bytes:
    # Headers end with CRLF and Path comes last: edge-tts drops the header block's last two bytes when parsing.
    content_type = "Content-Type:audio/mpeg\r\n" if data else ""
    headers = f"X-RequestId:{request_id}\r\n{content_type}X-StreamId:{stream_id}\r\nPath:audio\r\n".encode()
    return len(headers).to_bytes(2, "big") + headers + data


def _metadata(word: Word) -> dict[str, object]:
    return {
        "Metadata": [
            {
                "Type": "WordBoundary",
                "Data": {
                    "Offset": word.start_ms * TICKS_PER_MS,
                    "Duration": (word.end_ms - word.start_ms) * TICKS_PER_MS,
                    "text": {"Text": word.text, "Length": len(word.text), "BoundaryType": "WordBoundary"},
                },
            }
        ]
    }


def _parse_ssml(ssml: str) -> tuple[str, str]:
    """The voice's short name (en-US-AriaNeural) and the spoken text of an edge-tts SSML document."""
    voice = next(ET.fromstring(ssml).iter("{http://www.w3.org/2001/10/synthesis}voice"))
    match = _VOICE_NAME.match(voice.get("name", ""))
    # edge-tts sends "Microsoft Server Speech Text to Speech Voice (en-US, AriaNeural)".
    short_name = f"{match[1]}-{match[2]}" if match else voice.get("name", "")
    return short_name, "".join(voice.itertext())

"""Background music for renders: uploads stored by content hash for RESULT_TTL_SECONDS, and the music library."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import mimetypes
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from scenecast.v1 import types_pb2

from services.common.chunks import ChunkSink
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.media import MediaInfo, probe
from services.common.state import private_dir, write_private_file

_LOGGER = logging.getLogger(__name__)

# How often expired uploads are looked for, in seconds.
_JANITOR_SECONDS = 30.0
_UPLOAD_ID = re.compile(r"[0-9a-f]{64}")
# An audio/* type as RFC 6838 allows its subtype: no spaces, parameters or path characters.
_AUDIO_MIME = re.compile(r"audio/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_MAX_NAME_CHARS = 255


@dataclass(frozen=True)
class MusicFile:
    """Music a render streams to the assembler."""

    path: Path
    mime_type: str
    size_bytes: int


@dataclass(frozen=True)
class StoredMusic:
    upload_id: str
    duration_ms: int
    expires_in_seconds: int


class MusicStore:
    """Keeps uploaded music in `folder`, named by the SHA-256 of its bytes (the same file uploaded twice is stored
    once), next to a small JSON file with its MIME type; and finds music in the operator's `library_dir`.

    An upload is kept for `ttl_seconds` after it was last uploaded or used by a render, then removed.
    """

    def __init__(self, folder: Path, max_bytes: int, ttl_seconds: float, library_dir: str) -> None:
        self._folder = folder
        self._max_bytes = max_bytes
        self._ttl = ttl_seconds
        self._library = Path(library_dir) if library_dir else None
        self._janitor: asyncio.Task[None] | None = None

    async def upload(self, mime_type: str, size_bytes: int, chunks: AsyncIterator[types_pb2.MediaChunk]) -> StoredMusic:
        """Receives the bytes, checks they decode as audio, and stores them under their hash."""
        if not _AUDIO_MIME.fullmatch(mime_type):
            raise InvalidArgument(
                f"start.mime_type must be an audio/* type such as audio/mpeg or audio/wav (got {mime_type[:100]!r})"
            )
        if size_bytes > self._max_bytes:
            raise InvalidArgument(
                f"start.size_bytes is {size_bytes}, over the gateway's MAX_MUSIC_BYTES of {self._max_bytes}; "
                "shorten or compress the music"
            )
        private_dir(self._folder, "RENDER_OUTPUT_DIR")
        if self._janitor is None:
            self._janitor = asyncio.create_task(self._expire_uploads())
        partial = self._folder / f".upload-{uuid.uuid4().hex}"
        try:
            sink = ChunkSink(partial, size_bytes, "start", self._max_bytes)
            digest = hashlib.sha256()
            try:
                async for chunk in chunks:
                    sink.write(chunk)
                    digest.update(chunk.data)
            finally:
                sink.close()
            if not sink.complete:
                raise InvalidArgument(
                    f"the upload ended after {sink.received_bytes} of the {size_bytes} bytes that start.size_bytes "
                    "announced; send the whole file"
                )
            info = await asyncio.to_thread(_probe_audio, partial, "music")
            upload_id = digest.hexdigest()
            await asyncio.to_thread(self._keep, partial, upload_id, mime_type)
        finally:
            partial.unlink(missing_ok=True)
        _LOGGER.info("stored music %s (%d bytes, %d ms)", upload_id, size_bytes, info.duration_ms)
        return StoredMusic(upload_id, info.duration_ms, round(self._ttl))

    def _keep(self, partial: Path, upload_id: str, mime_type: str) -> None:
        """Both files appear whole or not at all (written beside, then renamed); the metadata first, since a lookup
        needs both."""
        write_private_file(self._folder / f"{upload_id}.json", json.dumps({"mime_type": mime_type}).encode())
        os.replace(partial, self._folder / upload_id)

    async def uploaded(self, upload_id: str) -> MusicFile:
        """An upload by its id; using it renews its time to live, so it outlasts the render that streams it."""
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise InvalidArgument(
                f"music.upload_id must be the 64-character id that UploadMusic returned (got {upload_id[:100]!r})"
            )
        return await asyncio.to_thread(self._uploaded, upload_id)

    def _uploaded(self, upload_id: str) -> MusicFile:
        audio = self._folder / upload_id
        metadata = self._folder / f"{upload_id}.json"
        try:
            if audio.stat().st_mtime < time.time() - self._ttl:
                raise FileNotFoundError(audio)  # expired, even if the janitor has not removed it yet
            mime_type = json.loads(metadata.read_text())["mime_type"]
            for path in (audio, metadata):
                os.utime(path)
            return MusicFile(audio, mime_type, audio.stat().st_size)
        except FileNotFoundError:
            raise NotFound(
                f"music.upload_id {upload_id} is unknown or has expired (uploads are kept {self._ttl:.0f} s); "
                "upload the music again"
            ) from None

    async def library_file(self, name: str) -> MusicFile:
        """A file of the music library, by its plain name; it must decode as audio."""
        if self._library is None:
            raise FailedPrecondition(
                "music.library_file needs a music library, and the gateway's MUSIC_LIBRARY_DIR is not set; upload "
                "the music with UploadMusic instead"
            )
        if not name or len(name) > _MAX_NAME_CHARS or ".." in name or any(c in name for c in "/\\\x00"):
            raise InvalidArgument(
                f"music.library_file must be a plain file name in the music library, without folders or '..' "
                f"(got {name[:100]!r})"
            )
        path = self._library / name
        if not path.is_file():
            raise NotFound(f"music.library_file {name!r} is not in the music library (MUSIC_LIBRARY_DIR)")
        mime_type = mimetypes.guess_type(name)[0] or ""
        if not mime_type.startswith("audio/"):
            raise InvalidArgument(f"music.library_file {name!r} is not named as audio (.mp3, .m4a, .wav, .ogg, .flac)")
        await asyncio.to_thread(_probe_audio, path, f"music.library_file {name!r}")
        return MusicFile(path, mime_type, path.stat().st_size)

    async def _expire_uploads(self) -> None:
        while True:
            await asyncio.sleep(min(_JANITOR_SECONDS, self._ttl))
            await asyncio.to_thread(self.expire)

    def expire(self) -> None:
        """Removes uploads (and partial files of abandoned uploads) untouched for the time to live."""
        cutoff = time.time() - self._ttl
        with contextlib.suppress(FileNotFoundError):
            for path in self._folder.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()


def _probe_audio(path: Path, field: str) -> MediaInfo:
    """Decodes the file's audio; FFmpeg's own message is left out, since it names the gateway's folders."""
    try:
        info = probe(path, field)
    except InvalidArgument:
        raise InvalidArgument(f"{field}: the file does not decode as audio") from None
    if not info.has_audio:
        raise InvalidArgument(f"{field}: the file has no audio stream")
    return info

"""The gateway's state files (the spend ledger, music uploads) and received chunks: private, and never written through
a link planted at their names."""

from __future__ import annotations

import hashlib
import io
import math
import struct
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from scenecast.v1 import types_pb2

from gateway.ledger import SpendEntry, SqliteLedger
from gateway.music import MusicStore
from services.common.chunks import ChunkSink, iter_chunks
from tests.private_files import mode

# Under the common umask (022), where a folder made without care is 0755 and a file 0644.
pytestmark = pytest.mark.usefixtures("usual_umask")


async def test_the_ledger_file_and_its_folder_are_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "spend.sqlite3"
    ledger = SqliteLedger(path)
    await ledger.record(SpendEntry("r1", "s1", "image", "flux", "flux-schnell", 1, "image", 0.003, False))
    assert await ledger.render_total("r1") == 0.003
    # SQLite gives its write-ahead log and shared-memory files the database file's mode.
    assert {p.name: mode(p) for p in [path.parent, *path.parent.iterdir()]} == {
        "state": 0o700,
        "spend.sqlite3": 0o600,
        "spend.sqlite3-wal": 0o600,
        "spend.sqlite3-shm": 0o600,
    }


@pytest.mark.parametrize("target", ["existing", "missing"])
def test_a_link_planted_as_the_ledger_is_refused_naming_the_setting(tmp_path: Path, victim: Path, target: str) -> None:
    path = tmp_path / "spend.sqlite3"
    path.symlink_to(victim if target == "existing" else tmp_path / "made-through-a-link")
    with pytest.raises(ValueError, match=r"SPEND_LEDGER_PATH=.*spend.sqlite3 is a symbolic link"):
        SqliteLedger(path)
    assert victim.read_text() == "precious" and not (tmp_path / "made-through-a-link").exists()


def _wav(seconds: float = 0.5, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        samples = (round(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate)))
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buffer.getvalue()


async def _chunks(data: bytes) -> AsyncIterator[types_pb2.MediaChunk]:
    for chunk in iter_chunks(data):
        yield chunk


async def _upload(store: MusicStore, data: bytes) -> str:
    stored = await store.upload("audio/wav", len(data), _chunks(data))
    return stored.upload_id


async def test_music_uploads_are_private_and_replace_links_planted_at_their_names(tmp_path: Path, victim: Path) -> None:
    data = _wav()
    upload_id = hashlib.sha256(data).hexdigest()
    folder = tmp_path / "music"
    folder.mkdir(mode=0o755)  # an existing folder open to others: tightened
    for name in (upload_id, f"{upload_id}.json"):
        (folder / name).symlink_to(victim)
    store = MusicStore(folder, 1024 * 1024, 3600.0, "")
    try:
        assert await _upload(store, data) == upload_id
        found = await store.uploaded(upload_id)
    finally:
        if store._janitor is not None:
            store._janitor.cancel()
    assert victim.read_text() == "precious"
    assert found.path.read_bytes() == data and found.mime_type == "audio/wav"
    assert {p.name: mode(p) for p in [folder, *folder.iterdir()]} == {
        "music": 0o700,
        upload_id: 0o600,
        f"{upload_id}.json": 0o600,
    }


async def test_a_music_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "music").symlink_to(tmp_path / "real")
    store = MusicStore(tmp_path / "music", 1024 * 1024, 3600.0, "")
    with pytest.raises(ValueError, match=r"RENDER_OUTPUT_DIR=.*music is a symbolic link"):
        await _upload(store, _wav())
    assert list((tmp_path / "real").iterdir()) == []


def test_a_chunk_sink_never_writes_through_a_link_at_its_name(tmp_path: Path, victim: Path) -> None:
    (tmp_path / "narration-0.wav").symlink_to(victim)
    with pytest.raises(FileExistsError):
        ChunkSink(tmp_path / "narration-0.wav", 4, "scene[0].narration", 100)
    assert victim.read_text() == "precious"
    sink = ChunkSink(tmp_path / "visual-0.png", 4, "scene[0].visual", 100)
    sink.write(types_pb2.MediaChunk(offset=0, data=b"\x89PNG"))
    assert sink.complete and (tmp_path / "visual-0.png").read_bytes() == b"\x89PNG"
    assert mode(tmp_path / "visual-0.png") == 0o600

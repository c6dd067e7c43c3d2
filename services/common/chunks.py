"""Media bytes as ~256 KiB chunks, and their reassembly with offset checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from scenecast.v1 import types_pb2

from services.common.errors import InvalidArgument
from services.common.state import create_private_file

CHUNK_BYTES = 256 * 1024


def iter_chunks(data: bytes) -> Iterator[types_pb2.MediaChunk]:
    """Splits bytes into MediaChunk messages; slices of a memoryview, so the bytes are not copied up front."""
    view = memoryview(data)
    for offset in range(0, len(view), CHUNK_BYTES):
        yield types_pb2.MediaChunk(offset=offset, data=bytes(view[offset : offset + CHUNK_BYTES]))


def iter_file_chunks(path: Path) -> Iterator[types_pb2.MediaChunk]:
    """Reads a file chunk by chunk, so a large file is never held whole in memory."""
    with path.open("rb") as handle:
        offset = 0
        while block := handle.read(CHUNK_BYTES):
            yield types_pb2.MediaChunk(offset=offset, data=block)
            offset += len(block)


class ChunkSink:
    """Receives one asset's chunks into a file, checking order and the announced size.

    `field` names the asset in error messages, for example "scenes[2].narration".
    """

    def __init__(self, path: Path, expected_bytes: int, field: str, max_bytes: int) -> None:
        if expected_bytes <= 0:
            raise InvalidArgument(f"{field}.size_bytes must be positive; send the asset's total size in its metadata")
        if expected_bytes > max_bytes:
            raise InvalidArgument(f"{field}.size_bytes is {expected_bytes}, over the limit of {max_bytes} bytes")
        self.path = path
        self.expected_bytes = expected_bytes
        self.received_bytes = 0
        self._field = field
        # A fresh file, never one already there nor the target of a link planted at its name.
        self._handle: BinaryIO | None = create_private_file(path)

    @property
    def complete(self) -> bool:
        return self.received_bytes == self.expected_bytes

    def write(self, chunk: types_pb2.MediaChunk) -> None:
        if self._handle is None:
            raise InvalidArgument(f"{self._field}: chunk after the asset was complete")
        if chunk.offset != self.received_bytes:
            raise InvalidArgument(
                f"{self._field}: chunk at offset {chunk.offset}, expected {self.received_bytes}; send chunks in order"
            )
        if self.received_bytes + len(chunk.data) > self.expected_bytes:
            raise InvalidArgument(f"{self._field}: more bytes than the announced size_bytes {self.expected_bytes}")
        self._handle.write(chunk.data)
        self.received_bytes += len(chunk.data)
        if self.complete:
            self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

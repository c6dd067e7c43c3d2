"""A SIGKILLed assembler leaves no FFmpeg running, and its successor removes the work folder it left behind."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from scenecast.v1 import assembler_service_pb2 as pb
from scenecast.v1 import assembler_service_pb2_grpc, types_pb2

from services.common import workdirs
from services.common.chunks import iter_chunks
from services.common.media import ffmpeg_exe
from tests.processes import processes_mentioning

HD = types_pb2.OutputSettings(aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=1080, quality=types_pb2.QUALITY_HD)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_assembler(work: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    address = f"127.0.0.1:{_free_port()}"
    env = {
        **os.environ,
        "LISTEN_ADDRESS": address,
        "ASSEMBLER_TMP_DIR": str(work),
        "METRICS_PORT": "0",
        "SEGMENT_CACHE_DIR": "off",
    }
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.assembler"], env=env, stdout=out, stderr=out)
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
    return process, address


def _assets(tmp_path: Path) -> list[pb.AssembleRequest]:
    """A 1080p still and two minutes of silence: an encode that is still running when the service is killed."""
    image = tmp_path / "still.png"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=1920x1080",
            "-frames:v",
            "1",
            str(image),
        ],
        check=True,
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\x00\x00" * 16000 * 120)
    png, silence = image.read_bytes(), buffer.getvalue()
    scene = types_pb2.Scene(id="s", narration="Check the ladder. Then climb.")
    messages = [
        pb.AssembleRequest(start=pb.AssemblyStart(output=HD, scene_count=2)),
        pb.AssembleRequest(
            scene=pb.SceneStart(
                scene_index=0,
                scene=scene,
                visual=types_pb2.AssetMetadata(mime_type="image/png", size_bytes=len(png)),
                narration=types_pb2.AssetMetadata(mime_type="audio/wav", size_bytes=len(silence)),
            )
        ),
    ]
    for role, data in ((pb.ASSET_ROLE_VISUAL, png), (pb.ASSET_ROLE_NARRATION, silence)):
        messages += [
            pb.AssembleRequest(chunk=pb.SceneChunk(scene_index=0, role=role, chunk=c)) for c in iter_chunks(data)
        ]
    return messages


async def _wait_for(condition, attempts: int = 100) -> bool:  # type: ignore[no-untyped-def]
    for _ in range(attempts):
        if condition():
            return True
        await asyncio.sleep(0.1)
    return condition()


async def test_a_killed_assembler_takes_ffmpeg_with_it_and_its_successor_sweeps_the_folder(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    log = tmp_path / "assembler.log"
    messages = _assets(tmp_path)
    first, address = _start_assembler(work, log)
    never = asyncio.Event()

    async def requests() -> AsyncIterator[pb.AssembleRequest]:
        for message in messages:
            yield message
        await never.wait()  # the second scene never comes: the first one's encode runs meanwhile

    try:
        async with grpc.aio.insecure_channel(address) as channel:
            call = assembler_service_pb2_grpc.AssemblerServiceStub(channel).Assemble(requests())
            async for response in call:
                if response.progress.stage == pb.ASSEMBLY_STAGE_SCENE_RECEIVED:
                    break
            assert await _wait_for(lambda: processes_mentioning(str(work))), "the scene's FFmpeg never started"
            first.send_signal(signal.SIGKILL)
            first.wait()
            call.cancel()
    finally:
        first.kill()
    # The kernel kills FFmpeg with its parent (PR_SET_PDEATHSIG); it used to run on for 20-60 s.
    assert await _wait_for(lambda: not processes_mentioning(str(work)), attempts=50)
    (left,) = list(work.iterdir())
    assert left.name.startswith(f"scenecast-assemble-{first.pid}-") and (left / "narration-0.wav").exists()
    # A folder of a live process (this one), in use, must survive the sweep.
    with workdirs.work_folder("scenecast-assemble-", str(work)) as live:
        second, _ = _start_assembler(work, log)
        try:
            assert sorted(work.iterdir()) == [live], log.read_text()[-2000:]
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
    assert list(work.iterdir()) == []

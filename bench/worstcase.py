"""Figure 8: each service's peak memory, its FFmpeg children included, on its worst valid request, against its limit.

Every service runs as its own process in a LocalStack; each request (two at once for the media services, whose
callers send several) is sent straight to the service, and the resident memory of the process and all its
descendants is summed every 10 ms (VmHWM leaves the children out, while the pod's limit counts them). The limits are
read from the Kubernetes manifests, so the figure follows any change to them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import yaml
from scenecast.v1 import render_service_pb2, types_pb2, video_service_pb2, video_service_pb2_grpc

from bench.common import (
    NARRATIONS,
    Asset,
    Figure,
    assemble,
    generate_image,
    log,
    output,
    render,
    scene,
    stack_env,
    synthesize,
)
from scenecast_cli.stack import LocalStack
from services.common.chunks import iter_chunks
from services.common.download import DEFAULT_MAX_BYTES
from services.common.media import ffmpeg_exe
from services.common.output import MAX_FPS, MAX_HEIGHT
from services.common.text import MAX_NARRATION_CHARS
from services.video.servicer import MAX_PROMPT_CHARS, MAX_TITLE_CHARS
from tests.e2e.test_worstcase_memory import LONG_SENTENCE
from tests.fakes.avatar_servers import SYNTHESIA_KEY, FakeSynthesia
from tests.process_memory import TreePeak, tree_rss_mib

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "k8s" / "base"
# The largest output the contract allows: 4K (16:9 at the largest height) at the highest frame rate.
OUTPUT_4K60 = output(MAX_HEIGHT, MAX_FPS, types_pb2.QUALITY_HD)
# A clip's length here: FFmpeg's memory follows the frame size, not the length (the clip streams from its file).
CLIP_MS = 1000
# The largest avatar video a vendor's answer may bring: just under the download limit (the fake's head is a few KiB).
AVATAR_BYTES = DEFAULT_MAX_BYTES - 2**20
# Words of at most 100 characters (the narration rule), up to a field's limit.
PROMPT = ("forklifts cross the loading dock while pedestrians wait at the marked walkway " * 60)[:MAX_PROMPT_CHARS]
TITLE = ("Loading dock safety " * 20)[:MAX_TITLE_CHARS]


def limit_mib(service: str) -> float:
    """The memory limit of the service's container in deploy/k8s/base, in MiB."""
    for document in yaml.safe_load_all((MANIFESTS / f"{service}.yaml").read_text()):
        if document and document.get("kind") == "Deployment":
            memory = document["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
            number, unit = memory[:-2], memory[-2:]
            return float(number) * {"Mi": 1, "Gi": 1024}[unit]
    raise ValueError(f"no Deployment with a memory limit in {service}.yaml")


def _measured(stack: LocalStack, service: str, what: str, call: Callable[[], object], request: str = "") -> Figure:
    """`request` names the request when a service has more than one worst case."""
    pid = stack.processes[service].pid
    before = tree_rss_mib(pid)
    with TreePeak(pid) as peak:
        call()
    after = tree_rss_mib(pid)
    limit = limit_mib(service)
    name = f"{service} ({request})" if request else service
    log(f"{name}: {before:.0f} MiB before, peak {peak.peak_mib:.0f} MiB, {after:.0f} MiB after")
    return Figure(
        f"worstcase-{service}{'-' + request if request else ''}",
        f"8. {name} peak RSS with its children, worst valid request, MiB",
        "MiB",
        f"< {limit:.0f}",
        lambda value: value < limit,
        [peak.peak_mib],
        [f"{what}; {before:.0f} MiB before the calls, {after:.0f} MiB after; one run: a peak is not a timing"],
    )


def _twice(call: Callable[[], object]) -> Callable[[], list[object]]:
    def both() -> list[object]:
        with ThreadPoolExecutor(2) as pool:
            return [future.result() for future in [pool.submit(call), pool.submit(call)]]

    return both


def _largest_source(work: Path) -> bytes:
    """The largest source image a clip takes (7680x4320), with an alpha channel: the most FFmpeg decodes."""
    path = work / "source.png"
    command = [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=s=7680x4320,format=rgba"]
    subprocess.run([*command, "-frames:v", "1", str(path)], check=True)
    return path.read_bytes()


def _clip(address: str, image: bytes) -> Asset:
    def requests() -> object:
        spec = video_service_pb2.ClipSpec(
            scene=types_pb2.Scene(title=TITLE, visual_prompt=PROMPT),
            output=OUTPUT_4K60,
            duration_ms=CLIP_MS,
            provider="kenburns",
            source_image_mime_type="image/png",
        )
        yield video_service_pb2.GenerateClipRequest(spec=spec)
        for chunk in iter_chunks(image):
            yield video_service_pb2.GenerateClipRequest(source_image_chunk=chunk)

    with grpc.insecure_channel(address) as channel:
        responses = list(video_service_pb2_grpc.VideoServiceStub(channel).GenerateClip(requests(), timeout=600))
    return responses[0].metadata, b"".join(r.chunk.data for r in responses[1:])


def _avatar_env(synthesia: FakeSynthesia, work: Path) -> dict[str, str]:
    """The video service pointed at the fake vendor, with the asset cache (where the video is stored) in `work`."""
    return {
        "SYNTHESIA_API_KEY": SYNTHESIA_KEY,
        "SYNTHESIA_BASE_URL": synthesia.base_url,
        "SYNTHESIA_POLL_SECONDS": "0.02",
        # The fake serves its videos on loopback.
        "ALLOW_PRIVATE_OUTPUT_URLS": "true",
        "ASSET_CACHE_DIR": str(work / "asset-cache"),
    }


def _avatar(address: str) -> int:
    """One avatar video; returns its size in bytes (the chunks are counted, not kept)."""
    request = video_service_pb2.GenerateAvatarVideoRequest(
        scenes=[types_pb2.Scene(narration=NARRATIONS[0])], output=output(720, 30), provider="synthesia", no_cache=True
    )
    with grpc.insecure_channel(address) as channel:
        responses = video_service_pb2_grpc.VideoServiceStub(channel).GenerateAvatarVideo(request, timeout=300)
        return sum(len(response.chunk.data) for response in responses if response.HasField("chunk"))


def run(work: Path) -> list[Figure]:
    figures: list[Figure] = []
    worst_scene = types_pb2.Scene(id="s00", title=TITLE, visual_prompt=PROMPT, narration=NARRATIONS[0])
    with (
        FakeSynthesia() as synthesia,
        LocalStack(env=stack_env(work, _avatar_env(synthesia, work)), log_dir=work) as stack,
    ):
        address = stack.addresses
        figures.append(
            _measured(
                stack,
                "image",
                f"two slides at once, 3840x2160, {len(PROMPT)}-character prompt and {len(TITLE)}-character title",
                _twice(lambda: generate_image(address["image"], worst_scene, OUTPUT_4K60, 0)),
            )
        )
        figures.append(
            _measured(
                stack,
                "audio",
                f"two piper narrations at once, one {len(LONG_SENTENCE)}-character sentence each (the longest "
                f"sentence, the costliest to speak; narrations are limited to {MAX_NARRATION_CHARS} characters)",
                _twice(lambda: synthesize(address["audio"], LONG_SENTENCE)),
            )
        )
        source = _largest_source(work)
        clips: list[Asset] = []
        figures.append(
            _measured(
                stack,
                "video",
                f"two kenburns clips at once, 3840x2160 at 60 fps, {CLIP_MS} ms, from a 7680x4320 RGBA PNG (the "
                "largest source taken)",
                lambda: clips.extend(_twice(lambda: _clip(address["video"], source))()),
                "clip",
            )
        )
        synthesia.padding_bytes = AVATAR_BYTES
        figures.append(
            _measured(
                stack,
                "video",
                f"one synthesia avatar video (the fake vendor's) of {AVATAR_BYTES / 2**20:.0f} MiB, just "
                "under the download limit, stored in the asset cache",
                lambda: _avatar(address["video"]),
                "avatar",
            )
        )
        narration = synthesize(address["audio"], NARRATIONS[0])
        figures.append(
            _measured(
                stack,
                "assembler",
                f"one scene at 3840x2160, 60 fps: the 4K clip looped under a {narration[0].duration_ms / 1000:.1f} s "
                "narration, captions burned",
                lambda: assemble(
                    address["assembler"], [worst_scene], clips[:1], [narration], OUTPUT_4K60, work / "assembled.mp4"
                ),
            )
        )
        request = render_service_pb2.RenderRequest(
            scenes=[scene(index) for index in range(2)],
            output=OUTPUT_4K60,
            providers=types_pb2.ProviderOverrides(video="kenburns"),
        )
        figures.append(
            _measured(
                stack,
                "gateway",
                "a render of 2 scenes at 3840x2160, 60 fps, kenburns clips (the gateway streams the MP4 through its "
                "file; figure 4 shows its peak flat from 0.15 to 1.1 GiB of output)",
                lambda: render(stack.gateway_address, request, work / "render.mp4"),
            )
        )
    return figures

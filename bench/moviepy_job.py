"""The assembly benchmark's MoviePy 2.2 side: run in bench/.venv-moviepy as `python moviepy_job.py MANIFEST.json`.

The manifest lists, per scene, the slide PNG, the narration WAV, its length and sentence timings (milliseconds), and
the same lead, tail, fade and output settings the scenecast assembler used, so both produce the same video.
"""

from __future__ import annotations

import json
import sys
import time

from moviepy import (
    AudioFileClip,
    CompositeAudioClip,
    CompositeVideoClip,
    ImageClip,
    TextClip,
    concatenate_videoclips,
    vfx,
)


def main(manifest_path: str) -> None:
    job = json.loads(open(manifest_path).read())
    width, height, fps = job["width"], job["height"], job["fps"]
    lead, tail, fade = job["lead_ms"] / 1000, job["tail_ms"] / 1000, job["fade_ms"] / 1000
    clips = []
    for item in job["scenes"]:
        duration = lead + item["narration_ms"] / 1000 + tail
        still = ImageClip(item["image"], duration=duration).resized((width, height))
        layers = [still]
        for cue in item["cues"]:
            start, end = lead + cue["start_ms"] / 1000, lead + cue["end_ms"] / 1000
            caption = TextClip(
                font=job["font"],
                text=cue["text"],
                font_size=round(height * 0.045),
                color="white",
                stroke_color="black",
                stroke_width=3,
                method="caption",
                size=(round(width * 0.85), None),
                text_align="center",
            )
            layers.append(
                caption.with_start(start)
                .with_duration(max(0.1, end - start))
                .with_position(("center", round(height * 0.82)))
            )
        narration = AudioFileClip(item["audio"]).with_start(lead)
        clip = (
            CompositeVideoClip(layers, size=(width, height))
            .with_duration(duration)
            .with_audio(CompositeAudioClip([narration]).with_duration(duration))
            .with_effects([vfx.FadeIn(fade), vfx.FadeOut(fade)])
        )
        clips.append(clip)
    movie = concatenate_videoclips(clips)
    started = time.perf_counter()
    movie.write_videofile(
        job["output"],
        fps=fps,
        codec="libx264",
        audio_codec="aac",
        audio_bitrate="192k",
        preset="veryfast",
        threads=job["threads"],
        ffmpeg_params=["-crf", "23", "-pix_fmt", "yuv420p"],
        logger=None,
    )
    print(json.dumps({"write_seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main(sys.argv[1])

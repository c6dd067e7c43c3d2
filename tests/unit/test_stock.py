"""Stock media: the search words taken from a scene, the choice of media and size, and the credits a render reports
and writes beside its video."""

from __future__ import annotations

from pathlib import Path

import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from gateway.render import Asset, _once, _SceneAssets
from scenecast_cli.client import credits_text, write_credits
from services.common.errors import InvalidArgument
from services.common.stock import Candidate, Credit, Rendition, choose, search_query


@pytest.mark.parametrize(
    ("prompt", "title", "query"),
    [
        ("A misty pine forest at dawn, soft golden light. Cinematic, 4k.", "", "misty pine forest dawn"),
        ("Close-up of hands typing on a laptop keyboard in a busy cafe", "", "hands typing laptop keyboard busy"),
        ("Aerial shot of waves crashing on rocks", "", "waves crashing rocks"),
        ("", "Morning commute", "morning commute"),
        ("Cinematic 4k shot.", "Harbour at night", "harbour night"),
        ("Cinematic, 4k, an old harbour at night", "", "old harbour night"),
        ("Ein Hund im Schnee", "", "ein hund im schnee"),
    ],
)
def test_the_search_is_the_subject_of_the_visual_description(prompt: str, title: str, query: str) -> None:
    assert search_query(prompt, title) == query


def test_a_description_with_nothing_to_search_for_is_refused_naming_the_fields() -> None:
    with pytest.raises(InvalidArgument, match="visual_prompt and title"):
        search_query("A cinematic 4k shot.", "")


def _credit(name: str) -> Credit:
    return Credit(
        "Pexels",
        name,
        f"https://www.pexels.com/@{name}",
        f"https://www.pexels.com/v/{name}/",
        f"Video by {name} on Pexels",
        "L",
    )


def _candidate(name: str, sizes: list[tuple[int, int]], seconds: float = 0.0) -> Candidate:
    renditions = tuple(Rendition(f"https://cdn.example/{name}/{w}x{h}", w, h) for w, h in sizes)
    return Candidate(name, renditions, seconds, _credit(name))


def test_the_first_media_of_the_output_s_shape_and_size_is_taken_at_its_smallest_sufficient_size() -> None:
    found = [
        _candidate("tall", [(1080, 1920)]),
        _candidate("small", [(640, 360)]),
        _candidate("big", [(640, 360), (1920, 1080), (3840, 2160)]),
    ]
    pick = choose(found, 1280, 720)
    assert pick is not None
    assert (pick.candidate.media_id, pick.rendition.width, pick.shortfalls) == ("big", 1920, ())


def test_when_nothing_is_large_enough_the_largest_is_taken_and_the_shortfall_said() -> None:
    pick = choose([_candidate("a", [(640, 360)]), _candidate("b", [(960, 540)])], 1920, 1080)
    assert pick is not None
    assert (pick.candidate.media_id, pick.rendition.width) == ("b", 960)
    assert pick.shortfalls == ("the largest is 960x540, under 1920x1080, so it is upscaled",)


def test_clips_long_enough_come_first_else_the_longest_is_looped() -> None:
    found = [_candidate("short", [(1920, 1080)], 3), _candidate("long", [(1280, 720)], 12)]
    assert choose(found, 1280, 720, 10.0).candidate.media_id == "long"  # type: ignore[union-attr]
    pick = choose(found, 1280, 720, 20.0)
    assert pick is not None and pick.candidate.media_id == "long"
    assert pick.shortfalls == ("the longest is 12 s, under 20.0 s, so it loops",)


def test_media_of_another_shape_are_taken_only_when_none_has_the_output_s() -> None:
    assert choose([_candidate("wide", [(1920, 1080)])], 720, 1280).candidate.media_id == "wide"  # type: ignore[union-attr]
    square = choose([_candidate("wide", [(1920, 1080)]), _candidate("sq", [(1000, 1080)])], 1080, 1080)
    assert square is not None and square.candidate.media_id == "sq"
    assert choose([_candidate("none", [])], 1280, 720) is None


def _asset(provider: str, credit: Credit | None = None) -> Asset:
    metadata = types_pb2.AssetMetadata(provider=provider)
    if credit is not None:
        metadata.credit.CopyFrom(types_pb2.Credit(**credit.__dict__))
    return Asset(metadata, [])


def test_a_scene_credits_what_it_shows() -> None:
    photo, footage = _credit("photo"), _credit("footage")
    # A clip made from a stock photo shows the photo; stock footage replaces the scene's image; generated media
    # need no credit.
    cases = [
        (_SceneAssets(image=_asset("pexels", photo), clip=_asset("kenburns")), ["photo"]),
        (_SceneAssets(image=_asset("pexels", photo), clip=_asset("pexels", footage)), ["footage"]),
        (_SceneAssets(image=_asset("slides"), clip=_asset("pixabay", footage)), ["footage"]),
        (_SceneAssets(image=_asset("pexels", photo)), ["photo"]),
        (_SceneAssets(image=_asset("slides"), clip=_asset("wan")), []),
    ]
    for assets, authors in cases:
        assert [credit.author for credit in assets.credits] == authors


def test_the_summary_credits_each_piece_of_media_once_in_order_of_appearance() -> None:
    a, b = (types_pb2.Credit(**_credit(name).__dict__) for name in ("a", "b"))
    assert [credit.author for credit in _once([b, a, b, a])] == ["b", "a"]


def test_the_credits_file_holds_the_libraries_wording_and_licences(tmp_path: Path) -> None:
    summary = render_service_pb2.RenderSummary(
        credits=[
            types_pb2.Credit(
                vendor="Pexels",
                author="Ava Long",
                author_url="https://www.pexels.com/@ava-long",
                source_url="https://www.pexels.com/video/202/",
                attribution="Video by Ava Long on Pexels",
                license="Pexels License",
            ),
            types_pb2.Credit(
                vendor="Pixabay",
                author="wideskies",
                author_url="https://pixabay.com/users/wideskies-3322/",
                source_url="https://pixabay.com/photos/test-302/",
                attribution="Image by wideskies from Pixabay",
                license="Pixabay Content License",
            ),
        ]
    )
    path = write_credits(summary, tmp_path / "out.mp4")
    assert path == tmp_path / "out.credits.txt"
    assert path.read_bytes() == (
        b"Video by Ava Long on Pexels (https://www.pexels.com/video/202/)\n"
        b"  Ava Long: https://www.pexels.com/@ava-long\n"
        b"Image by wideskies from Pixabay (https://pixabay.com/photos/test-302/)\n"
        b"  wideskies: https://pixabay.com/users/wideskies-3322/\n"
        b"\n"
        b"Pexels License\n"
        b"Pixabay Content License\n"
    )


def test_a_render_with_nothing_to_credit_writes_no_credits_file_and_removes_an_older_video_s(tmp_path: Path) -> None:
    assert credits_text(render_service_pb2.RenderSummary()) == ""
    assert write_credits(render_service_pb2.RenderSummary(), tmp_path / "out.mp4") is None
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out.credits.txt").write_text("Video by someone on Pexels\n")
    assert write_credits(render_service_pb2.RenderSummary(), tmp_path / "out.mp4") is None
    assert list(tmp_path.iterdir()) == []

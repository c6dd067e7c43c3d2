"""Request validation: every rejection names the field."""

from pathlib import Path

import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from gateway.validation import check_provider, validate_render
from scenecast_cli.script import ScriptError, load_script
from services.common.errors import InvalidArgument
from services.common.output import output_format
from services.common.text import checked_text, split_sentences


def _request(**changes: object) -> render_service_pb2.RenderRequest:
    request = render_service_pb2.RenderRequest(
        scenes=[types_pb2.Scene(id="a", narration="Hello.", visual_prompt="A slide.")],
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=720, fps=30, quality=types_pb2.QUALITY_STANDARD
        ),
    )
    for path, value in changes.items():
        target = request
        *parents, leaf = path.split("__")
        for part in parents:
            target = getattr(target, part)[0] if part == "scenes" else getattr(target, part)
        setattr(target, leaf, value)
    return request


def test_valid_request_gives_the_frame_size() -> None:
    output = validate_render(_request(), max_scenes=10)
    assert (output.width, output.height, output.fps, output.captions) == (1280, 720, 30, True)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"scenes__narration": ""}, "scenes[0].narration"),
        ({"scenes__narration": "x" * 4001}, "scenes[0].narration"),
        ({"scenes__narration": "bell\x07"}, "scenes[0].narration"),
        ({"scenes__id": "has space"}, "scenes[0].id"),
        ({"scenes__visual_prompt": ""}, "scenes[0].visual_prompt"),
        ({"output__height": 0}, "output.height"),
        ({"output__height": 721}, "output.height"),
        ({"output__height": 4320}, "output.height"),
        ({"output__aspect_ratio": 0}, "output.aspect_ratio"),
        ({"output__aspect_ratio": 42}, "output.aspect_ratio"),
        ({"output__fps": 240}, "output.fps"),
        ({"output__quality": 0}, "output.quality"),
        ({"render_id": "../etc"}, "render_id"),
    ],
)
def test_bad_fields_are_named(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_render(_request(**changes), max_scenes=10)
    assert str(error.value).startswith(field)


def test_scene_count_and_duplicate_ids() -> None:
    empty = _request()
    del empty.scenes[:]
    with pytest.raises(InvalidArgument, match="scenes is empty"):
        validate_render(empty, max_scenes=10)
    many = _request()
    many.scenes.extend(types_pb2.Scene(id=f"s{i}", narration="Hi.", title="T") for i in range(3))
    with pytest.raises(InvalidArgument, match="limit is 3"):
        validate_render(many, max_scenes=3)
    twice = _request()
    twice.scenes.add(id="a", narration="Again.", title="T")
    with pytest.raises(InvalidArgument, match=r"scenes\[1\].id 'a' repeats scenes\[0\].id"):
        validate_render(twice, max_scenes=10)


def test_unknown_provider_lists_the_valid_ones() -> None:
    check_provider("", "providers.image", ["slides"])
    with pytest.raises(InvalidArgument, match="providers.image: unknown provider 'dalle'; valid: slides"):
        check_provider("dalle", "providers.image", ["slides"])


def test_output_sizes_per_aspect_ratio() -> None:
    def size(aspect: int, height: int) -> tuple[int, int]:
        settings = types_pb2.OutputSettings(aspect_ratio=aspect, height=height, quality=types_pb2.QUALITY_HD)
        output = output_format(settings)
        return output.width, output.height

    assert size(types_pb2.ASPECT_RATIO_16_9, 1080) == (1920, 1080)
    assert size(types_pb2.ASPECT_RATIO_9_16, 1280) == (720, 1280)
    assert size(types_pb2.ASPECT_RATIO_9_16, 640) == (360, 640)
    assert size(types_pb2.ASPECT_RATIO_1_1, 720) == (720, 720)
    assert output_format(types_pb2.OutputSettings(aspect_ratio=1, height=720, quality=2)).fps == 30


def test_text_rules() -> None:
    assert checked_text("  hi  ", "f", 10) == "hi"
    assert checked_text("", "f", 10, required=False) == ""
    with pytest.raises(InvalidArgument, match="U\\+0000"):
        checked_text("a\x00b", "f", 10)
    assert split_sentences("One. Two!  Three? (Four.) Five") == ["One.", "Two!", "Three?", "(Four.)", "Five"]


@pytest.mark.parametrize("script", sorted((Path(__file__).parents[2] / "examples").glob("*.yaml")), ids=str)
def test_example_scripts_load(script: Path) -> None:
    request = load_script(script).request
    assert len(request.scenes) >= 3
    validate_render(request, max_scenes=50)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scenes: []", "scenes: List should have at least 1 item"),
        ("scenes:\n  - {id: a}", "scenes.0.narration: Field required"),
        ("output: {aspect_ratio: '4:3'}\nscenes:\n  - {id: a, narration: Hi}", "output.aspect_ratio"),
        ("scenes:\n  - {id: a, narration: Hi, colour: red}", "scenes.0.colour: Extra inputs are not permitted"),
        ("scenes: [", "not valid YAML"),
    ],
)
def test_bad_script_names_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "script.yaml"
    path.write_text(text)
    with pytest.raises(ScriptError, match=str(path)) as error:
        load_script(path)
    assert message in str(error.value)

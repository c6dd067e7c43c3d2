"""The web studio in real headless Chromium (Debian's, through its chromedriver), in front of the offline stack."""

from __future__ import annotations

import http.client
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from scenecast_cli.stack import LocalStack
from tests.e2e.web_script import SCRIPT
from tests.fakes.base import Fault
from tests.fakes.openai_server import FakeOpenAI
from tests.probe import probe_mp4

SCREENSHOT = Path(__file__).resolve().parents[2] / "out" / "studio.png"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, openai_fake: FakeOpenAI) -> Iterator[LocalStack]:
    """The services and the web process, as `scenecast serve` starts them; OpenAI (the fake) is there for the
    scripts and drafts that pick it, the defaults stay offline."""
    env = openai_fake.service_env()
    local = LocalStack(env=env, log_dir=tmp_path_factory.mktemp("studio-logs"), web=True).start()
    yield local
    local.stop()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[WebDriver]:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, "the studio test needs Debian's chromium and chromium-driver: tools/test-deps.sh"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--mute-audio",
        # The test starts playback itself, as a user's click would.
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver
    driver.quit()


def _open(browser: WebDriver, stack: LocalStack) -> WebDriverWait[WebDriver]:
    """The studio, once it has read the providers from /v1/config and priced its example script."""
    browser.get_log("browser")  # what earlier pages logged is theirs
    browser.get(f"{stack.web_url}/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: len(Select(b.find_element(By.ID, "provider-image")).options) > 1)
    wait.until(lambda b: b.find_element(By.ID, "estimate-total").text.startswith("Estimated cost"))
    return wait


def _paste(browser: WebDriver, text: str) -> None:
    """Replaces the editor's text as a paste does: everything selected, then the new text inserted at once."""
    editor = browser.find_element(By.ID, "script")
    editor.click()
    editor.send_keys(Keys.CONTROL, "a")
    browser.execute_cdp_cmd("Input.insertText", {"text": text})


def _console_errors(browser: WebDriver) -> list[str]:
    """Errors the page logged (a script error, a resource that failed, a Content-Security-Policy violation)."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_page_sets_a_strict_csp_runs_no_inline_script_and_holds_no_secret(stack: LocalStack) -> None:
    page = httpx.get(f"{stack.web_url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    # Every script is a file of the studio's own, and nothing in the markup runs code or styles inline.
    assert re.findall(r"<script[^>]*>", page.text) == ['<script type="module" src="/studio/studio.js">']
    assert not re.search(r"\son[a-z]+=|\sstyle=|javascript:", page.text)
    for asset in ("studio.js", "studio.css", "icon.svg"):
        served = httpx.get(f"{stack.web_url}/studio/{asset}")
        assert served.status_code == 200 and served.headers["content-security-policy"] == policy, asset
        assert served.headers["cache-control"] == "no-cache", asset  # never yesterday's studio after an upgrade
        assert "token" not in served.text.lower() and "api_key" not in served.text.lower(), asset
    # A path that climbs out of the studio's folder is not served (sent raw: httpx would tidy it up).
    address = httpx.URL(stack.web_url)
    for path in ("/studio/../app.py", "/studio/%2e%2e/app.py", "/studio/..%2fconfig.py"):
        connection = http.client.HTTPConnection(address.host, address.port, timeout=30)
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            assert (answer.status, answer.getheader("content-type")) == (404, "application/problem+json"), path
        finally:
            connection.close()


def test_a_script_error_is_shown_at_its_line(browser: WebDriver, stack: LocalStack) -> None:
    wait = _open(browser, stack)
    _paste(browser, SCRIPT.replace("narration: Keep three", "narration: ''\n    show: sideways\n    #"))
    errors = browser.find_element(By.ID, "script-errors")
    wait.until(lambda b: len(errors.find_elements(By.TAG_NAME, "li")) == 2)
    items = [item.text for item in errors.find_elements(By.TAG_NAME, "li")]
    # scenes[1] is the second list item: `narration` on line 9 and `show` on line 10 of the pasted text.
    assert items[0].startswith("Line 9 scenes[1].narration: String should have at least 1 character"), items
    assert items[1].startswith("Line 10 scenes[1].show: Input should be"), items
    assert browser.find_element(By.ID, "script").get_attribute("aria-invalid") == "true"
    # The line button puts the caret on that line, for keyboard users too.
    errors.find_element(By.TAG_NAME, "button").send_keys(Keys.ENTER)
    selected = browser.execute_script(
        "const e = document.activeElement; return [e.id, e.value.slice(e.selectionStart, e.selectionEnd)]"
    )
    assert selected == ["script", "    narration: ''"]
    # Not YAML at all: the parser's line is shown.
    _paste(browser, "title: x\nscenes:\n  - id: a\n   narration: [\n")
    wait.until(lambda b: "not valid YAML" in errors.text)
    assert errors.text.startswith("Line 4 not valid YAML: "), errors.text
    # The gateway's own refusal names a contract field ("visual_prompt" is the script's `visual`): shown at the
    # nearest line the script has, the scene's.
    _paste(browser, SCRIPT.replace("    title: Check the ladder\n", ""))
    wait.until(lambda b: "visual_prompt" in errors.text)
    assert errors.text == ("Line 4 scenes[0].visual_prompt and scenes[0].title are both empty; give at least one"), (
        errors.text
    )
    # The refused estimates are the page's only errors (Chromium logs every 4xx answer).
    refused = "/v1/estimate - Failed to load resource: the server responded with a status of 400"
    logged = _console_errors(browser)
    assert logged and all(refused in message for message in logged), logged


def test_the_controls_are_labelled_and_reached_by_tab_with_a_visible_focus(
    browser: WebDriver, stack: LocalStack
) -> None:
    _open(browser, stack)
    browser.execute_script("document.activeElement.blur()")
    reached = []
    for _ in range(6):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        reached.append(
            browser.execute_script(
                "const e = document.activeElement, style = getComputedStyle(e);"
                "return [e.id, e.labels?.length ? [...e.labels].map((l) => l.textContent) : [e.textContent],"
                " style.outlineStyle, style.outlineWidth]"
            )
        )
    assert reached == [
        # The drafting form, folded until opened: its summary is the one stop before the editor.
        ["", ["Draft from a topic or a document"], "solid", "3px"],
        ["script", ["Script (YAML, the CLI's format)"], "solid", "3px"],
        ["provider-image", ["Image"], "solid", "3px"],
        ["provider-speech", ["Speech"], "solid", "3px"],
        ["provider-video", ["Video clips"], "solid", "3px"],
        ["render", ["Render"], "solid", "3px"],
    ]


def test_a_pasted_script_is_priced_rendered_played_and_downloaded(
    browser: WebDriver, stack: LocalStack, downloads: Path, tmp_path: Path
) -> None:
    wait = _open(browser, stack)
    config = httpx.get(f"{stack.web_url}/v1/config").json()
    images = next(s for s in config["provider_sets"] if s["kind"] == "MEDIA_KIND_IMAGE")
    assert {provider["offline"] for provider in images["providers"]} == {True, False}
    # Every provider is offered with its price from the config.
    offered = {o.get_attribute("value"): o.text for o in Select(browser.find_element(By.ID, "provider-image")).options}
    for provider in images["providers"]:
        text = offered[provider["name"]]
        if provider["offline"]:
            assert text == f"{provider['name']}: free, offline"
        else:
            for price in provider["prices"]:
                assert f" per {price['unit']} ({price['model']})" in text, text

    _paste(browser, SCRIPT)
    # Picking a provider writes it into the script, which is what gets priced and rendered.
    Select(browser.find_element(By.ID, "provider-image")).select_by_value(images["default_provider"])
    editor = browser.find_element(By.ID, "script")
    pasted = SCRIPT + f"providers: {{image: {images['default_provider']}}}\n"
    assert editor.get_attribute("value") == pasted
    estimate = httpx.post(
        f"{stack.web_url}/v1/estimate", content=pasted, headers={"Content-Type": "application/yaml"}
    ).json()
    total = f"Estimated cost: ${estimate['total_usd']:.2f} for 2 scenes"
    wait.until(lambda b: b.find_element(By.ID, "estimate-total").text == total)
    rows = browser.find_elements(By.CSS_SELECTOR, "#estimate tbody tr")
    assert [row.find_element(By.TAG_NAME, "th").text for row in rows] == ["check", "three"]
    assert all(images["default_provider"] in row.text for row in rows)

    browser.find_element(By.ID, "render").send_keys(Keys.ENTER)
    player = browser.find_element(By.ID, "player")
    WebDriverWait(browser, 90).until(lambda b: b.execute_script("return arguments[0].readyState", player) >= 1)
    scenes = browser.find_elements(By.CSS_SELECTOR, "#scenes > li")
    assert [scene.find_element(By.CLASS_NAME, "scene-id").text for scene in scenes] == ["check", "three"]
    for scene in scenes:
        steps = scene.find_element(By.CLASS_NAME, "scene-state").text.split(" · ")
        assert sorted(steps[:2]) == ["image", "speech"] and steps[2:] == ["encoded"], steps
        bar = scene.find_element(By.TAG_NAME, "progress")
        assert bar.get_attribute("value") == bar.get_attribute("max") == "3"
    status = browser.find_element(By.ID, "render-status").text
    assert status.startswith("Done: "), status

    mp4_url = browser.find_element(By.ID, "download-mp4").get_attribute("href")
    served = httpx.get(mp4_url)
    probed_path = tmp_path / "served.mp4"
    probed_path.write_bytes(served.content)
    probed = probe_mp4(probed_path)
    assert abs(browser.execute_script("return arguments[0].duration", player) - probed.duration_s) < 0.05

    # Playing: the clock advances, and the caption track holds the WebVTT file's cues.
    assert (
        browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "arguments[0].play().then(() => done('playing'), (error) => done(String(error)))",
            player,
        )
        == "playing"
    )
    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return arguments[0].currentTime", player) > 1.0)
    vtt = httpx.get(browser.find_element(By.ID, "download-vtt").get_attribute("href")).text
    wait.until(
        lambda b: b.execute_script("return arguments[0].textTracks[0].cues?.length", player) == vtt.count(" --> ")
    )
    # Loaded but not painted: the same captions are burned into the picture.
    assert browser.execute_script("return arguments[0].textTracks[0].mode", player) == "hidden"
    # Each scene's frame appears next to its progress.
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#scenes img")) == 2)
    browser.execute_script("arguments[0].pause()", player)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.set_window_size(1280, browser.execute_script("return document.documentElement.scrollHeight") + 120)
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(SCREENSHOT))

    browser.find_element(By.ID, "download-mp4").click()
    wait.until(lambda b: [p.name for p in downloads.iterdir()] and not list(downloads.glob("*.crdownload")))
    (downloaded,) = downloads.iterdir()
    assert downloaded.read_bytes() == served.content
    assert (probe_mp4(downloaded).video_codec, probe_mp4(downloaded).audio_codec) == ("h264", "aac")

    # The render is listed among the recent ones, and the page fits a phone's width with all of it shown.
    assert browser.find_element(By.ID, "recent").text.startswith("Ladders (")
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
    )
    try:
        widths = browser.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths == [390, 390]
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert _console_errors(browser) == []

    # Opened again later from the recent renders: its progress replayed, its video back in the player.
    _open(browser, stack)
    assert browser.find_element(By.ID, "render-status").text == "Nothing rendered yet."
    browser.find_element(By.CSS_SELECTOR, "#recent button").click()
    wait.until(lambda b: b.execute_script("return arguments[0].readyState", b.find_element(By.ID, "player")) >= 1)
    assert browser.find_element(By.ID, "render-status").text == status
    assert browser.find_element(By.ID, "download-mp4").get_attribute("href") == mp4_url


def _shown_pictures(browser: WebDriver) -> list[list[Any]]:
    """Each scene picture the page has finished loading: its address, its size, and whether it is a button."""
    return browser.execute_script(  # type: ignore[no-any-return]
        "return [...document.querySelectorAll('#scenes img')].filter((i) => i.complete && i.naturalWidth)"
        ".map((i) => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight, i.parentElement.tagName])"
    )


def test_each_scene_image_is_shown_while_the_render_still_runs(
    browser: WebDriver, stack: LocalStack, openai_fake: FakeOpenAI
) -> None:
    """The narration comes from the fake OpenAI, which holds its answers until the test lets them go: the render
    cannot end before then, so the pictures seen meanwhile come from the scenes' image events."""
    wait = _open(browser, stack)
    released = threading.Event()
    for _ in ("check", "three"):  # each scene's narration is held
        openai_fake.add_fault(Fault("/v1/audio/speech", status=0, held=released))
    try:
        _paste(browser, SCRIPT + "providers: {speech: openai}\n")
        browser.find_element(By.ID, "render").click()
        wait.until(lambda b: len(_shown_pictures(b)) == 2)
        status = browser.find_element(By.ID, "render-status").text
        render_id = status.removeprefix("Rendering ").removesuffix("…")
        previews = [f"/v1/renders/{render_id}/scenes/{scene}/preview.jpg" for scene in ("check", "three")]
        # The previews of the 640x360 frames, shown before the video: still running, narration held.
        assert _shown_pictures(browser) == [[preview, 320, 180, "LI"] for preview in previews]
        assert httpx.get(f"{stack.web_url}/v1/renders/{render_id}").json()["state"] == "running"
        assert browser.find_element(By.ID, "player").get_attribute("hidden") == "true"
    finally:
        released.set()
    wait.until(lambda b: b.find_element(By.ID, "render-status").text.startswith("Done: "))
    # Once the video is there, the same pictures play it from their scene.
    wait.until(lambda b: _shown_pictures(b) == [[preview, 320, 180, "BUTTON"] for preview in previews])
    assert _console_errors(browser) == []


def test_a_running_render_is_cancelled_from_the_page(browser: WebDriver, stack: LocalStack) -> None:
    wait = _open(browser, stack)
    scenes = "".join(
        f"  - id: s{n}\n    title: Part {n}\n    narration: Scene number {n} of a long video.\n" for n in range(12)
    )
    _paste(browser, f"title: Long\noutput: {{height: 360, quality: draft}}\nscenes:\n{scenes}")
    browser.find_element(By.ID, "render").click()
    cancel = browser.find_element(By.ID, "cancel")
    wait.until(lambda b: cancel.is_enabled())
    cancel.click()
    status = browser.find_element(By.ID, "render-status")
    wait.until(lambda b: status.text.endswith("cancelled."))
    render_id = status.text.removeprefix("Render ").removesuffix(" cancelled.")
    assert httpx.get(f"{stack.web_url}/v1/renders/{render_id}").json()["state"] == "cancelled"
    assert browser.find_element(By.ID, "render").is_enabled() and not cancel.is_enabled()
    assert browser.find_element(By.ID, "player").get_attribute("hidden") == "true"


DRAFTED = """\
title: "Ladders"
scenes:
  - id: scene-1
    title: "Ladders"
    narration: "Set the feet on level ground. Then climb with both hands free."
    visual: "A ladder against a brick wall"
  - id: scene-2
    title: "Three points of contact"
    narration: "Keep two hands and a foot, or two feet and a hand, on the ladder."
    visual: "Three points of contact: Keep two hands and a foot, or two feet and a hand, on the ladder."
"""


def _draft(browser: WebDriver, wait: WebDriverWait[WebDriver], kind: str, provider: str, text: str) -> str:
    """Drafts from the folded form as a user would; returns the status line once the draft is in the editor."""
    if not browser.find_element(By.ID, "drafting").get_attribute("open"):
        browser.find_element(By.CSS_SELECTOR, "#drafting summary").click()
    source = browser.find_element(By.ID, "draft-source")
    source.clear()
    source.click()
    browser.execute_cdp_cmd("Input.insertText", {"text": text})
    Select(browser.find_element(By.ID, "draft-kind")).select_by_value(kind)
    Select(browser.find_element(By.ID, "draft-provider")).select_by_value(provider)
    browser.find_element(By.ID, "draft").click()
    status = browser.find_element(By.ID, "draft-status")
    wait.until(lambda b: status.text.startswith(("Drafted", "Not drafted")))
    return status.text


def test_a_document_and_a_topic_are_drafted_into_the_editor_and_priced(
    browser: WebDriver, stack: LocalStack, openai_fake: FakeOpenAI
) -> None:
    wait = _open(browser, stack)
    assert Select(browser.find_element(By.ID, "draft-provider")).first_selected_option.get_attribute("value") == (
        "outline"
    )
    document = (
        "# Ladders\n\n![A ladder against a brick wall](ladder.png)\n\n"
        "Set the feet on level ground. Then climb with both hands free.\n\n"
        "## Three points of contact\n\nKeep two hands and a foot, or two feet and a hand, on the ladder.\n"
    )
    status = _draft(browser, wait, "markdown", "outline", document)
    assert status == "Drafted 2 scenes with outline (outline) for $0.00. Edit the script below, then render it."
    assert browser.find_element(By.ID, "script").get_attribute("value") == DRAFTED
    wait.until(lambda b: b.find_element(By.ID, "estimate-total").text == "Estimated cost: $0.00 for 2 scenes")
    # A topic asks the language model (the fake OpenAI), which is paid for and says so.
    openai_fake.reset()
    status = _draft(browser, wait, "topic", "openai", "how ladders stay upright")
    [call] = openai_fake.chat_calls
    assert status.startswith("Drafted 3 scenes with openai (gpt-4.1-mini-2025-04-14) for $0.00"), status
    script = browser.find_element(By.ID, "script").get_attribute("value") or ""
    assert script.startswith('title: "All about Topic: how ladders stay upright"\nscenes:\n  - id: scene-1\n')
    assert call["prompt_tokens"] > 0
    wait.until(lambda b: b.find_element(By.ID, "estimate-total").text == "Estimated cost: $0.00 for 3 scenes")
    # A topic for the offline outline is refused with the fix in the words of the API.
    status = _draft(browser, wait, "topic", "outline", "how ladders stay upright")
    assert status.startswith("Not drafted: drafting the script: topic: the outline provider drafts from a"), status

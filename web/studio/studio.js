// The studio: edits a script, prices it, renders it through the /v1 API and plays the result. No framework and no
// build step: the page is small, and plain modules keep it working with no network.

const EXAMPLE = `title: My first video
output: {height: 360, quality: draft}
scenes:
  - id: hello
    title: Hello
    narration: This video was written as a script and rendered by scenecast.
`;
const KINDS = { MEDIA_KIND_IMAGE: "image", MEDIA_KIND_SPEECH: "speech", MEDIA_KIND_VIDEO: "video" };
const ASSETS = {
  MEDIA_KIND_IMAGE: "image",
  MEDIA_KIND_SPEECH: "speech",
  MEDIA_KIND_VIDEO: "clip",
  MEDIA_KIND_AVATAR: "avatar",
};
// The API lists no renders (the gateway keeps no list per person): this browser remembers the ones it started.
const RECENT_KEY = "scenecast.recent";
const RECENT_MAX = 10;
// Long enough not to price every keystroke, short enough to feel live.
const ESTIMATE_DELAY_MS = 400;

const $ = (id) => document.getElementById(id);
const editor = $("script");
const pickers = [...document.querySelectorAll("select[data-kind]")];
let estimateTimer = 0;
let estimating = null;
let watching = null;
let current = null;

function usd(amount) {
  const value = Number(amount || 0);
  return `$${value.toFixed(value > 0 && value < 0.01 ? 4 : 2)}`;
}

function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  // Answers are JSON or problem+json; anything else (a proxy's error page) is reported by its status alone.
  const json = /json/.test(response.headers.get("Content-Type") || "");
  const body = json ? await response.json() : null;
  if (!response.ok) {
    const problem = body || { detail: `HTTP ${response.status} ${response.statusText}` };
    throw Object.assign(new Error(problem.detail), { problem });
  }
  return body;
}

function post(path, text, signal) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/yaml" }, body: text, signal });
}

// ---- errors at their line ----

function indentOf(line) {
  return line.length - line.trimStart().length;
}

function significant(line) {
  return line.trim() !== "" && !line.trimStart().startsWith("#");
}

// The 1-based line of a field path ("scenes[1].narration") in block-style YAML, or of its nearest parent that is
// written out (a field given in flow style or missing altogether points at its parent); null when none is found.
function lineOf(text, field) {
  const lines = text.split("\n");
  let start = 0;
  let end = lines.length;
  let parentIndent = -1;
  let found = null;
  for (const part of field.match(/[^.[\]]+/g) || []) {
    const inScope = [];
    for (let i = start; i < end; i++) {
      if (i > start && significant(lines[i]) && indentOf(lines[i]) <= parentIndent) break;
      inScope.push(i);
    }
    let hit = null;
    if (/^\d+$/.test(part)) {
      const items = inScope.filter((i) => /^\s*-(\s|$)/.test(lines[i]) && indentOf(lines[i]) > parentIndent);
      const depth = Math.min(...items.map((i) => indentOf(lines[i])));
      hit = items.filter((i) => indentOf(lines[i]) === depth)[Number(part)];
      if (hit !== undefined) parentIndent = depth;
    } else {
      const escaped = part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      const key = new RegExp(`^(\\s*(?:-\\s+)?)${escaped}\\s*:`);
      const keys = inScope.filter((i) => key.test(lines[i]));
      const column = (i) => key.exec(lines[i])[1].length;
      hit = keys.sort((a, b) => column(a) - column(b))[0];
      if (hit !== undefined) parentIndent = column(hit);
    }
    if (hit === undefined || hit === null) break;
    found = hit;
    start = hit;
    end = inScope[inScope.length - 1] + 1;
  }
  return found === null ? null : found + 1;
}

function showErrors(problem) {
  const list = $("script-errors");
  list.replaceChildren();
  editor.removeAttribute("aria-invalid");
  if (!problem) return;
  editor.setAttribute("aria-invalid", "true");
  const text = editor.value;
  const items = problem.errors || [{ field: problem.field, detail: problem.detail }];
  for (const { field, detail } of items) {
    // A script that is not YAML at all has no field: the parser's message says "line N" (the last mark is the spot).
    const marks = [...problem.detail.matchAll(/line (\d+)/g)];
    const line = field ? lineOf(text, field) : marks.length ? Number(marks[marks.length - 1][1]) : null;
    const item = element("li");
    if (line !== null) {
      const jump = element("button", `Line ${line}`, { type: "button", class: "line" });
      jump.addEventListener("click", () => selectLine(line));
      item.append(jump, " ");
    }
    item.append(field && !detail.startsWith(field) ? `${field}: ${detail}` : detail);
    list.append(item);
  }
}

function selectLine(line) {
  const lines = editor.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((sum, text) => sum + text.length + 1, 0);
  editor.focus();
  editor.setSelectionRange(start, start + (lines[line - 1] || "").length);
}

// ---- providers and the estimate ----

function priceText(provider) {
  if (provider.offline) return "free, offline";
  const prices = provider.prices.map((p) => `${usd(p.usd_per_unit)} per ${p.unit} (${p.model})`).join("; ");
  return provider.configured ? prices : `${prices}; needs ${provider.required_env.join(", ")}`;
}

async function loadConfig() {
  const config = await api("/v1/config");
  for (const set of config.provider_sets) {
    if (set.kind === "MEDIA_KIND_SCRIPT") showDraftProviders(set);
    const picker = pickers.find((p) => p.dataset.kind === KINDS[set.kind]);
    if (!picker) continue;
    const first = set.default_provider ? `default (${set.default_provider})` : "none: still images";
    picker.replaceChildren(element("option", first, { value: "" }));
    for (const provider of set.providers) {
      const option = element("option", `${provider.name}: ${priceText(provider)}`, { value: provider.name });
      option.disabled = !provider.configured;
      picker.append(option);
    }
  }
}

// The pickers write the script's `providers:` line, so that what is priced and rendered is what the editor shows.
function applyPickers() {
  const kept = [];
  let skipping = false;
  for (const line of editor.value.split("\n")) {
    if (/^providers\s*:/.test(line)) skipping = true;
    else if (skipping && (!significant(line) || indentOf(line) > 0)) continue;
    else skipping = false;
    if (!skipping) kept.push(line);
  }
  while (kept.length && kept[kept.length - 1].trim() === "") kept.pop();
  const chosen = pickers.filter((p) => p.value).map((p) => `${p.dataset.kind}: ${p.value}`);
  if (chosen.length) kept.push(`providers: {${chosen.join(", ")}}`);
  editor.value = `${kept.join("\n")}\n`;
  scheduleEstimate();
}

function scheduleEstimate() {
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(estimate, ESTIMATE_DELAY_MS);
}

async function estimate() {
  estimating?.abort();
  estimating = new AbortController();
  const text = editor.value;
  try {
    const result = await post("/v1/estimate", text, estimating.signal);
    showErrors(null);
    const rows = result.scenes.map((scene) => {
      const row = element("tr");
      row.append(element("th", scene.scene_id, { scope: "row" }));
      const clip = scene.video_provider ? `${usd(scene.video_usd)} ${scene.video_provider}` : "none";
      for (const cell of [
        `${usd(scene.image_usd)} ${scene.image_provider}`,
        `${usd(scene.speech_usd)} ${scene.speech_provider}`,
        clip,
        usd(scene.total_usd),
      ]) {
        row.append(element("td", cell));
      }
      return row;
    });
    $("estimate").tBodies[0].replaceChildren(...rows);
    const avatar = result.avatar_provider ? ` (avatar video by ${result.avatar_provider})` : "";
    const scenes = `${rows.length} scene${rows.length === 1 ? "" : "s"}`;
    $("estimate-total").textContent = `Estimated cost: ${usd(result.total_usd)} for ${scenes}${avatar}`;
  } catch (error) {
    if (error.name === "AbortError") return;
    $("estimate-total").textContent = "No estimate: the script has errors.";
    $("estimate").tBodies[0].replaceChildren();
    showErrors(error.problem || { detail: error.message });
  }
}

// ---- drafting a script from a topic or a document ----

function showDraftProviders(set) {
  const picker = $("draft-provider");
  picker.replaceChildren();
  for (const provider of set.providers) {
    const option = element("option", `${provider.name}: ${priceText(provider)}`, { value: provider.name });
    option.disabled = !provider.configured;
    option.selected = provider.name === set.default_provider;
    picker.append(option);
  }
}

// The draft in the editor's format: block YAML, each text a double-quoted scalar (a JSON string is one), so that
// errors point at their lines and any character survives.
function scriptYaml(script) {
  const quoted = JSON.stringify;
  const lines = script.title ? [`title: ${quoted(script.title)}`] : [];
  lines.push("scenes:");
  for (const scene of script.scenes) {
    lines.push(`  - id: ${scene.id}`, `    title: ${quoted(scene.title)}`);
    lines.push(`    narration: ${quoted(scene.narration)}`, `    visual: ${quoted(scene.visual)}`);
  }
  return `${lines.join("\n")}\n`;
}

async function draft() {
  const kind = $("draft-kind").value;
  const source = $("draft-source").value;
  const body = kind === "topic" ? { topic: source } : { document: { text: source, format: kind } };
  body.provider = $("draft-provider").value;
  body.seconds = Number($("draft-seconds").value || 0);
  const status = (text) => ($("draft-status").textContent = text);
  $("draft").disabled = true; // one click, one draft: a paid draft sent twice is paid twice
  status("Drafting…");
  try {
    const created = await api("/v1/drafts", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    editor.value = scriptYaml(created.script);
    applyPickers(); // keeps the providers chosen above, and prices the draft
    const scenes = created.script.scenes.length;
    status(
      `Drafted ${scenes} scene${scenes === 1 ? "" : "s"} with ${created.provider} (${created.model}) for ` +
        `${usd(created.cost_usd)}. Edit the script below, then render it.`,
    );
    loadSpend();
  } catch (error) {
    status(`Not drafted: ${error.message}`);
  } finally {
    $("draft").disabled = false;
  }
}

// ---- rendering and progress ----

function sceneRow(index, sceneId) {
  const list = $("scenes");
  while (list.children.length <= index) {
    const n = list.children.length;
    const row = element("li", undefined, { "data-state": "waiting" });
    const name = element("span", `scene ${n + 1}`, { class: "scene-id" });
    const bar = element("progress", undefined, { max: "3", value: "0", "aria-label": `Scene ${n + 1} progress` });
    row.append(name, bar, element("span", "waiting", { class: "scene-state" }));
    list.append(row);
  }
  const row = list.children[index];
  if (sceneId) row.querySelector(".scene-id").textContent = sceneId;
  return row;
}

function sceneStep(event, step) {
  const row = sceneRow(event.scene_index, event.scene_id);
  const bar = row.querySelector("progress");
  // A scene's bar starts at image, speech and encoding: a clip adds a step, an avatar video replaces two with one.
  bar.max += { clip: 1, avatar: -1 }[step] || 0;
  bar.value += 1;
  const done = row.dataset.done ? `${row.dataset.done} · ${step}` : step;
  row.dataset.done = done;
  row.dataset.state = step === "encoded" ? "encoded" : "working";
  row.querySelector(".scene-state").textContent = done;
}

function overall(event) {
  $("render-progress").max = event.total_steps || 1;
  $("render-progress").value = event.completed_steps;
}

function setRunning(running) {
  $("render").disabled = running;
  $("cancel").disabled = !running;
}

function follow(renderId) {
  watching?.close();
  current = renderId;
  for (const frame of $("scenes").querySelectorAll("img[src^='blob:']")) URL.revokeObjectURL(frame.src);
  $("scenes").replaceChildren();
  $("player").hidden = true;
  $("downloads").hidden = true;
  $("render-progress").value = 0;
  setRunning(true);
  const events = new EventSource(`/v1/renders/${encodeURIComponent(renderId)}/events`);
  watching = events;
  const on = (name, handle) => events.addEventListener(name, (message) => handle(JSON.parse(message.data)));
  const status = (text) => ($("render-status").textContent = text);
  on("accepted", (event) => {
    status(`Rendering ${renderId}…`);
    overall(event);
  });
  on("asset_ready", (event) => {
    sceneStep(event, ASSETS[event.media_kind] || "asset");
    if (event.preview) showPicture(event.scene_index, event.preview, event.scene_id);
    overall(event);
  });
  on("scene_encoded", (event) => {
    sceneStep(event, "encoded");
    overall(event);
  });
  on("muxing", () => status("Joining the scenes, narration and captions…"));
  on("streaming", () => status("Finishing the MP4…"));
  on("summary", (summary) => {
    events.close();
    setRunning(false);
    $("render-progress").value = $("render-progress").max;
    const spent = `${usd(summary.recorded_spend_usd)} spent`;
    status(`Done: ${(summary.duration_ms / 1000).toFixed(1)} s, ${summary.width}×${summary.height}, ${spent}.`);
    showVideo(summary);
    loadSpend();
  });
  // A named `error` event is the render's problem document; a plain one is the connection, which EventSource
  // re-opens by itself (resuming with Last-Event-ID) unless it gave up.
  events.addEventListener("error", (message) => {
    if (message instanceof MessageEvent) {
      events.close();
      setRunning(false);
      const problem = JSON.parse(message.data);
      status(problem.grpc_status === "CANCELLED" ? `Render ${renderId} cancelled.` : `Failed: ${problem.detail}`);
    } else if (events.readyState === EventSource.CLOSED) {
      setRunning(false);
      status(`Lost the connection to render ${renderId}; open it again from the recent renders.`);
    }
  });
}

async function render() {
  clearTimeout(estimateTimer);
  const text = editor.value;
  $("render").disabled = true; // one click, one render: no second POST while the first is answered
  try {
    const created = await post("/v1/renders", text);
    showErrors(null);
    const title = /^title\s*:\s*(.+)$/m.exec(text)?.[1] || created.render_id;
    remember({ id: created.render_id, title, at: new Date().toISOString() });
    follow(created.render_id);
  } catch (error) {
    $("render").disabled = false;
    $("render-status").textContent = `Not rendered: ${error.message}`;
    showErrors(error.problem || { detail: error.message });
  }
}

async function cancel() {
  await api(`/v1/renders/${encodeURIComponent(current)}/cancel`, { method: "POST" });
}

// ---- the result ----

function showVideo(summary) {
  const base = `/v1/renders/${encodeURIComponent(summary.render_id)}`;
  const player = $("player");
  const captions = $("captions");
  const hasVtt = summary.subtitles.some((file) => file.format === "SUBTITLE_FORMAT_WEBVTT");
  const hasSrt = summary.subtitles.some((file) => file.format === "SUBTITLE_FORMAT_SRT");
  if (hasVtt) captions.src = `${base}/captions.vtt`;
  else captions.removeAttribute("src");
  player.src = `${base}/video.mp4`;
  // The captions are burned into the picture too: the track is loaded (the player's captions menu and assistive
  // tools read it) but not painted by default, which would show every line twice.
  player.textTracks[0].mode = "hidden";
  player.hidden = false;
  $("download-mp4").href = `${base}/video.mp4`;
  $("download-srt").href = `${base}/captions.srt`;
  $("download-vtt").href = `${base}/captions.vtt`;
  $("download-srt").parentElement.hidden = !hasSrt;
  $("download-vtt").parentElement.hidden = !hasVtt;
  $("downloads").hidden = false;
  summary.scenes.forEach((scene, index) => sceneRow(index, scene.scene_id));
  const unpictured = [...summary.scenes.entries()].filter(([index]) => !sceneRow(index).querySelector("img"));
  // The frames are a convenience: if this browser cannot draw them, the player and downloads still work.
  sceneFrames(player.src, unpictured)
    .catch(() => {})
    .finally(() => linkPictures(summary.scenes));
}

// Puts a scene's picture at the head of its row, once: the preview of its image (as soon as the image exists, while
// the rest of the render runs), or a frame of the finished video for a scene without one (an avatar video).
function showPicture(index, src, sceneId) {
  const row = sceneRow(index, sceneId);
  if (row.querySelector("img")) return;
  row.prepend(element("img", undefined, { src, alt: `Scene ${sceneId}`, class: "frame" }));
}

// Once the video is there, each picture becomes a button that plays it from that scene.
function linkPictures(scenes) {
  scenes.forEach((scene, index) => {
    const picture = sceneRow(index).querySelector("img.frame");
    if (!picture) return;
    const jump = element("button", undefined, { type: "button", class: "frame" });
    picture.replaceWith(jump);
    picture.removeAttribute("class");
    picture.alt = `Play from scene ${scene.scene_id}`;
    jump.append(picture);
    jump.addEventListener("click", () => {
      $("player").currentTime = scene.start_ms / 1000;
      $("player").play();
    });
  });
}

// The pictures of scenes that have no preview (an avatar video's), taken from the finished video halfway through
// the scene (past its fade-in). `scenes` holds [index, scene] pairs.
async function sceneFrames(source, scenes) {
  if (!scenes.length) return;
  const video = element("video");
  video.muted = true;
  video.preload = "auto";
  video.src = source;
  await new Promise((resolve, reject) => {
    video.addEventListener("loadeddata", resolve, { once: true });
    video.addEventListener("error", reject, { once: true });
  });
  for (const [index, scene] of scenes) {
    video.currentTime = (scene.start_ms + scene.duration_ms / 2) / 1000;
    await new Promise((resolve) => video.addEventListener("seeked", resolve, { once: true }));
    const canvas = element("canvas");
    canvas.width = 160;
    canvas.height = Math.round((160 * video.videoHeight) / video.videoWidth);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.8));
    showPicture(index, URL.createObjectURL(blob), scene.scene_id);
  }
  video.removeAttribute("src");
  video.load();
}

// ---- recent renders and spend ----

function recent() {
  try {
    return JSON.parse(localStorage.getItem(RECENT_KEY)) || [];
  } catch {
    return [];
  }
}

function remember(entry) {
  const entries = [entry, ...recent().filter((old) => old.id !== entry.id)].slice(0, RECENT_MAX);
  localStorage.setItem(RECENT_KEY, JSON.stringify(entries));
  showRecent();
}

function showRecent() {
  const items = recent().map((entry) => {
    const open = element("button", `${entry.title} (${new Date(entry.at).toLocaleString()})`, { type: "button" });
    open.addEventListener("click", async () => {
      try {
        await api(`/v1/renders/${encodeURIComponent(entry.id)}`);
        follow(entry.id);
      } catch (error) {
        $("render-status").textContent = error.message;
      }
    });
    const item = element("li");
    item.append(open);
    return item;
  });
  $("recent").replaceChildren(...(items.length ? items : [element("li", "None yet.")]));
}

async function loadSpend() {
  try {
    const spend = await api("/v1/spend?group_by=day");
    $("spend").textContent = `Spend recorded: ${usd(spend.total_usd)}`;
  } catch (error) {
    $("spend").textContent = `Spend unavailable: ${error.message}`;
  }
}

// ---- start ----

editor.value = EXAMPLE;
editor.addEventListener("input", scheduleEstimate);
for (const picker of pickers) picker.addEventListener("change", applyPickers);
$("render").addEventListener("click", render);
$("draft").addEventListener("click", draft);
$("cancel").addEventListener("click", cancel);
showRecent();
loadSpend();
loadConfig()
  .then(estimate)
  .catch((error) => ($("estimate-total").textContent = `The API is not ready: ${error.message}`));

// robotrl labelling page: shows one query (two looping videos) at a time and sends the annotator's answers.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "robotrl-token";
const NAME_KEY = "robotrl-annotator";
const UNDO_KEY_PREFIX = "robotrl-undo-key:"; // + annotator name: the secret /api/undo asks for
const POLL_MS = 2000;
const MAX_DRIFT_S = 0.15; // resync the right video when it drifts further from the left one
const KEYS = {
  ArrowLeft: "left", a: "left", ArrowRight: "right", d: "right",
  ArrowUp: "equal", w: "equal", ArrowDown: "skip", s: "skip",
};

const answerButtons = { left: $("btn-left"), right: $("btn-right"), equal: $("btn-equal"), skip: $("btn-skip") };
const videos = [$("video-left"), $("video-right")];
const state = { query: null, busy: false, poll: null, seq: 0, loaded: new Set() };

// The access token arrives once as ?token=; keep it for this tab (the server also set a cookie) and hide it.
const params = new URLSearchParams(location.search);
const token = params.get("token") || sessionStorage.getItem(TOKEN_KEY) || "";
if (params.has("token")) {
  sessionStorage.setItem(TOKEN_KEY, token);
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}

function annotator() {
  return $("annotator").value.trim();
}

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

function updateButtons() {
  const ready = !state.busy && annotator() !== "";
  for (const button of Object.values(answerButtons)) button.disabled = !ready || state.query === null;
  $("btn-undo").disabled = !ready;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (token) headers["X-Robotrl-Token"] = token;
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = {};
  try {
    data = await response.json();
  } catch {
    // not JSON (e.g. a video): callers only look at the status
  }
  return { status: response.status, data };
}

function showQuery(query) {
  const same = state.query !== null && query !== null && state.query.id === query.id;
  state.query = query;
  $("query-id").textContent = query ? String(query.id) : "–";
  if (same) return; // new ticket, same videos: keep them playing
  state.loaded.clear();
  for (const [video, side] of [[videos[0], "left"], [videos[1], "right"]]) {
    if (query) {
      video.src = query[side].video;
    } else {
      video.removeAttribute("src");
      video.load();
    }
  }
}

// Show the next pending query; `message` replaces the status line once it is there.
async function loadNext(message = "") {
  clearTimeout(state.poll);
  const seq = ++state.seq;
  const name = annotator();
  if (!name) {
    showQuery(null);
    setStatus("Enter your name to start.");
    updateButtons();
    return;
  }
  let result;
  try {
    result = await api("GET", "/api/next?annotator=" + encodeURIComponent(name));
  } catch {
    if (seq !== state.seq) return;
    setStatus("Cannot reach the labelling server — retrying…", "error");
    state.poll = setTimeout(() => loadNext(message), POLL_MS);
    return;
  }
  if (seq !== state.seq) return; // a newer request (e.g. another name) took over
  if (result.status !== 200) {
    showQuery(null);
    setStatus(result.data.error || `Error ${result.status}`, "error");
    updateButtons();
    return;
  }
  const { query, progress, task, key } = result.data;
  if (key) sessionStorage.setItem(UNDO_KEY_PREFIX + name, key); // sent once per name and server start
  $("task").textContent = task;
  $("progress").textContent = `${progress.labelled} labelled · ${progress.pending} to go`;
  showQuery(query);
  if (query === null) {
    setStatus((message ? message + " " : "") + "All queries labelled — waiting for more…");
    state.poll = setTimeout(loadNext, POLL_MS);
  } else {
    setStatus(message);
  }
  updateButtons();
}

async function submit(label) {
  const query = state.query;
  if (state.busy || query === null || !annotator()) return;
  state.busy = true;
  updateButtons();
  try {
    const body = { query: query.id, label, annotator: annotator(), ticket: query.ticket };
    const result = await api("POST", "/api/label", body);
    if (result.status === 201) {
      await loadNext(`Saved “${label}” for query ${query.id}.`);
    } else if (result.status === 409) {
      await loadNext(result.data.error || "That query was already answered.");
    } else {
      setStatus(result.data.error || `Error ${result.status}: the answer was not saved.`, "error");
    }
  } catch {
    setStatus("Cannot reach the labelling server: the answer was not saved.", "error");
  } finally {
    state.busy = false;
    updateButtons();
  }
}

async function undo() {
  if (state.busy || !annotator()) return;
  state.busy = true;
  updateButtons();
  try {
    const key = sessionStorage.getItem(UNDO_KEY_PREFIX + annotator()) || "";
    const result = await api("POST", "/api/undo", { annotator: annotator(), key });
    if (result.status === 200) {
      await loadNext(`Undid “${result.data.label}” on query ${result.data.query}.`);
    } else if (result.status === 404) {
      setStatus("Nothing to undo.");
    } else {
      setStatus(result.data.error || `Error ${result.status}: nothing was undone.`, "error");
    }
  } catch {
    setStatus("Cannot reach the labelling server: nothing was undone.", "error");
  } finally {
    state.busy = false;
    updateButtons();
  }
}

// Start both videos together once both can play, and keep the right one in step with the left one.
for (const video of videos) {
  video.addEventListener("loadeddata", () => {
    state.loaded.add(video);
    if (state.loaded.size < 2) return;
    for (const v of videos) {
      v.currentTime = 0;
      v.play().catch(() => {});
    }
  });
  video.addEventListener("error", async () => {
    const src = video.getAttribute("src");
    if (!src) return;
    try {
      const result = await api("GET", src);
      setStatus(result.data.error || "This video cannot be played in this browser.", "error");
    } catch {
      setStatus("Cannot reach the labelling server to load the videos.", "error");
    }
  });
}
videos[0].addEventListener("timeupdate", () => {
  const [left, right] = videos;
  const duration = left.duration;
  if (state.loaded.size < 2 || right.paused || !Number.isFinite(duration)) return;
  const gap = Math.abs(left.currentTime - right.currentTime);
  if (Math.min(gap, duration - gap) > MAX_DRIFT_S) right.currentTime = left.currentTime;
});

for (const [label, button] of Object.entries(answerButtons)) button.addEventListener("click", () => submit(label));
$("btn-undo").addEventListener("click", undo);

document.addEventListener("keydown", (event) => {
  if (event.target === $("annotator") || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (Object.hasOwn(KEYS, key)) {
    event.preventDefault();
    submit(KEYS[key]);
  } else if (key === "u" || key === "Backspace") {
    event.preventDefault();
    undo();
  }
});

const nameInput = $("annotator");
nameInput.value = params.get("annotator") || localStorage.getItem(NAME_KEY) || "";
if (nameInput.value) localStorage.setItem(NAME_KEY, nameInput.value.trim());
nameInput.addEventListener("input", updateButtons);
nameInput.addEventListener("change", () => {
  localStorage.setItem(NAME_KEY, annotator());
  showQuery(null);
  loadNext();
});
nameInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter") nameInput.blur(); // commits the name and hands the keys back to the shortcuts
});

if (!nameInput.value) nameInput.focus();
loadNext();

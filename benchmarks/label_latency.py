"""How long a person waits for the next query in the labelling page, for MuJoCo segments of 50 steps.

For each env (HalfCheetah-v5, Walker2d-v5 at 320x240 by default) on label stores of uniform query pairs sampled by
`robotrl.offline_queries.write_queries` (as `robotrl reward queries` does) from a random-action rollout:

(a) cold: a query's two videos rendered from the stored simulator states and encoded (WebM/VP8) on demand, per segment
    and per query (2 segments), through the library's `SegmentVideos.path`;
(b) the same split into rendering (states -> frames) and encoding (frames -> WebM);
(c) warm: served from the cache over HTTP (GET /api/next plus both video GETs);
(d) prefetch: from a label POST until the next query's videos have been downloaded, while the server renders the
    next queries ahead of a simulated annotator who looks at each query for `--think` seconds (and, as the worst
    case, one who answers instantly).

GL quality (`--gl`, both by default):
  fast  the library as it is: `SegmentVideos` calls `envs.rendering.fast_rendering` on its env (no multisampling,
        shadow map at most 1024^2);
  full  for comparison only: `robotrl.labelling.videos.fast_rendering` is monkeypatched to a no-op while this setting
        is measured, so MuJoCo renders with the model's own quality (4x multisampling, 4096^2 shadow map for both envs).
On a machine without a GPU MuJoCo renders through Mesa's llvmpipe, where those two dominate the cost of a frame.

Videos use the server's default camera: "track" (follows the body) for HalfCheetah-v5, the model's default for
Walker2d-v5 (which follows the walker too).

Prints a markdown table of medians and writes JSON (raw times too) to benchmarks/results/label_latency.json.

    python benchmarks/label_latency.py --queries 10 --think 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
import robotrl.labelling.videos as videos_module
from reward_learning.label_store import LabelStore
from robotrl.core.buffers import ReplayBuffer
from robotrl.labelling.server import LabelServer
from robotrl.labelling.videos import SegmentVideos
from robotrl.offline_queries import empty_buffer, write_queries
from robotrl.spaces import ActionAdapter

LENGTH = 50
# Random actions topple Walker2d within a few dozen steps; keep it simulating so slices are full 50-step videos.
MAKE_KWARGS: dict[str, dict[str, Any]] = {"Walker2d-v5": {"terminate_when_unhealthy": False},
                                          "Hopper-v5": {"terminate_when_unhealthy": False}}
RESULTS = Path(__file__).resolve().parent / "results" / "label_latency.json"
GL_SETTINGS = ("full", "fast")


def random_buffer(env_id: str, steps: int, seed: int = 0) -> tuple[ReplayBuffer, ActionAdapter, list[str]]:
    """`steps` random-action steps of `env_id` (episodes back to back) with simulator states, in a replay buffer;
    also the env's action adapter and reward component names."""
    env = envs.make(env_id, record_state=True, seed=seed, render_mode=None, **MAKE_KWARGS.get(env_id, {}))
    adapter, names = ActionAdapter.from_space(env.action_space), [c.name for c in env.reward_spec]
    rows: list[tuple] = []
    obs, _ = env.reset()
    episode, t = 0, 0
    while len(rows) < steps:
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, info = env.step(action)
        rows.append((obs, action, next_obs, reward, [info["reward_components"][n] for n in names], terminated,
                     truncated, t, episode, info["state"]))
        obs, t = next_obs, t + 1
        if terminated or truncated:
            (obs, _), episode, t = env.reset(), episode + 1, 0
    env.close()
    fields = ("obs", "action", "next_obs", "reward", "components", "terminated", "truncated", "episode_step",
              "episode_id", "state")
    columns = {key: np.asarray(column) for key, column in zip(fields, zip(*rows, strict=True), strict=True)}
    columns["action"] = adapter.from_env(columns["action"])
    buffer = empty_buffer(steps, tuple(env.observation_space.shape), adapter, len(names), columns["state"].shape[1])
    buffer.add(env_reward=columns["reward"], **columns)
    return buffer, adapter, names


def build_store(path: Path, env_id: str, queries: int, length: int = LENGTH, seed: int = 0,
                task: str | None = None) -> Path:
    """A label store at `path` with `queries` pending uniform pairs of `length`-step windows (they may overlap) of a
    random-action rollout of 2 * queries * length steps, with the simulator states that let them be rendered."""
    buffer, adapter, names = random_buffer(env_id, 2 * queries * length, seed)
    with LabelStore(path, env_id=env_id, obs_shape=tuple(buffer.storage["obs"].shape[1:]),
                    action_dim=adapter.stored_dim, component_names=names, task_description=task) as store:
        write_queries(buffer, store, queries, length, seed, f"random-{seed}")
    return path


class TimedVideos(SegmentVideos):
    """The library's `SegmentVideos`, recording how long each render (states -> frames -> file) and each encode took,
    and the GL quality its env renders with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.render_times: list[float] = []
        self.encode_times: list[float] = []
        self.quality: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    def _render(self, store: LabelStore, env: Any, segment_id: int) -> Path:
        quality = env.unwrapped.model.vis.quality
        self.quality = {"offsamples": int(quality.offsamples), "shadowsize": int(quality.shadowsize)}
        start = time.perf_counter()
        try:
            return super()._render(store, env, segment_id)
        finally:
            self.render_times.append(time.perf_counter() - start)

    def _encode(self, frames: list[np.ndarray], final: Path) -> None:
        start = time.perf_counter()
        try:
            super()._encode(frames, final)
        finally:
            self.encode_times.append(time.perf_counter() - start)


@contextlib.contextmanager
def gl_quality(gl: str) -> Iterator[None]:
    """"fast": the library unchanged. "full": `fast_rendering` in `robotrl.labelling.videos` replaced by a no-op
    (undone on exit), so envs made meanwhile by `SegmentVideos`, also the server's, keep the model's GL quality."""
    if gl == "fast":
        yield
        return
    original = videos_module.fast_rendering
    videos_module.fast_rendering = lambda env: None
    try:
        yield
    finally:
        videos_module.fast_rendering = original


def get(url: str) -> bytes:
    """The body of a GET (loopback only)."""
    with urllib.request.urlopen(url, timeout=300) as response:
        return response.read()


def post(url: str, body: dict[str, Any]) -> int:
    """POST JSON; returns the status code."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return response.status


def fetch_query(base: str, annotator: str) -> tuple[dict[str, Any] | None, int]:
    """GET /api/next and both of its videos, as the page does; returns the query and the video bytes."""
    query = json.loads(get(f"{base}api/next?annotator={annotator}"))["query"]
    if query is None:
        return None, 0
    size = sum(len(get(base + query[side]["video"].lstrip("/"))) for side in ("left", "right"))
    return query, size


def cold(store: Path, cache: Path, width: int, height: int) -> dict[str, Any]:
    """(a)+(b): every video of every query rendered on demand, one query after another."""
    with LabelStore.open(store) as s:
        pairs = s.query_segments(s.pending_queries())
    videos = TimedVideos(store, cache, width=width, height=height)
    try:
        start = time.perf_counter()
        videos.path(pairs[0][0])  # the first video also builds the env and its GL context
        startup = time.perf_counter() - start
        videos.render_times.clear()
        videos.encode_times.clear()
        segment_times, query_times = [], []
        for i, (left, right) in enumerate(pairs):
            times = []
            for segment in (left, right):
                if i == 0 and segment == left:
                    videos.cached_path(segment).unlink()  # render it again, now that the env exists
                start = time.perf_counter()
                videos.path(segment)
                times.append(time.perf_counter() - start)
            segment_times += times
            query_times.append(sum(times))
        render = [total - enc for total, enc in zip(videos.render_times, videos.encode_times, strict=True)]
        sizes = [videos.cached_path(seg).stat().st_size for pair in pairs for seg in pair]
        return {"startup_s": startup, "segment_s": segment_times, "query_s": query_times, "render_s": render,
                "encode_s": list(videos.encode_times), "video_bytes": sizes, "gl_quality": videos.quality}
    finally:
        videos.close()


def warm(store: Path, cache: Path, width: int, height: int) -> dict[str, Any]:
    """(c): every query served from the cache over HTTP; the label POST after each is not timed."""
    times = []
    with LabelServer(store, port=0, cache_dir=cache, width=width, height=height) as server:
        videos = server.app.extensions["robotrl_videos"]
        while True:
            start = time.perf_counter()
            query, _ = fetch_query(server.url, "warm")
            if query is None:
                break
            times.append(time.perf_counter() - start)
            post(server.url + "api/label", {"query": query["id"], "label": "left", "annotator": "warm",
                                            "ticket": query["ticket"]})
        renders = videos.renders
    return {"query_s": times, "renders": renders}


def prefetched(store: Path, cache: Path, width: int, height: int, think: float) -> dict[str, Any]:
    """(d): label POST -> next query's videos downloaded, with the server rendering ahead of an annotator who
    spends `think` seconds on each query. The first query (nothing could be ahead yet) is reported apart."""
    times = []
    with LabelServer(store, port=0, cache_dir=cache, width=width, height=height) as server:
        start = time.perf_counter()
        query, _ = fetch_query(server.url, "ahead")
        first = time.perf_counter() - start
        while query is not None:
            time.sleep(think)
            start = time.perf_counter()
            post(server.url + "api/label", {"query": query["id"], "label": "right", "annotator": "ahead",
                                            "ticket": query["ticket"]})
            query, _ = fetch_query(server.url, "ahead")
            if query is not None:
                times.append(time.perf_counter() - start)
    return {"first_query_s": first, "query_s": times, "think_s": think}


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def measure(env_id: str, queries: int, width: int, height: int, think: float, gl: str, root: Path) -> dict[str, Any]:
    """All four measurements for one env and GL setting, each on its own store and video cache."""
    root = root / f"{env_id}-{gl}"
    root.mkdir(parents=True)
    stores = {name: build_store(root / f"{name}.sqlite", env_id, queries, seed=seed)
              for seed, name in enumerate(("cold", "think", "instant"))}
    out: dict[str, Any] = {}
    with gl_quality(gl):
        out["cold"] = cold(stores["cold"], root / "cold-cache", width, height)
        out["warm"] = warm(stores["cold"], root / "cold-cache", width, height)
        out["prefetch"] = prefetched(stores["think"], root / "think-cache", width, height, think)
        out["prefetch_instant"] = prefetched(stores["instant"], root / "instant-cache", width, height, 0.0)
    return out


def summary(results: dict[str, dict[str, Any]], think: float) -> dict[str, dict[str, float]]:
    """Medians (seconds) per env and GL setting."""
    return {column: {
        "cold_segment": median(r["cold"]["segment_s"]),
        "cold_query": median(r["cold"]["query_s"]),
        "render_segment": median(r["cold"]["render_s"]),
        "encode_segment": median(r["cold"]["encode_s"]),
        "startup_first_video": r["cold"]["startup_s"],
        "warm_http_query": median(r["warm"]["query_s"]),
        f"prefetch_think_{think:g}s": median(r["prefetch"]["query_s"]),
        "prefetch_instant": median(r["prefetch_instant"]["query_s"]),
        "first_query_empty_cache": median([r["prefetch"]["first_query_s"], r["prefetch_instant"]["first_query_s"]]),
        "video_kib": median(r["cold"]["video_bytes"]) / 1024,
    } for column, r in results.items()}


def table(medians: dict[str, dict[str, float]], think: float) -> str:
    """A markdown table: one row per measurement, one column per env and GL setting (seconds unless noted)."""
    rows = [("cold: one segment (render + encode)", "cold_segment"), ("cold: one query (2 segments)", "cold_query"),
            ("  of which render, per segment", "render_segment"), ("  of which encode, per segment", "encode_segment"),
            ("first video of a server (env + GL start-up)", "startup_first_video"),
            ("warm: GET /api/next + 2 cached videos", "warm_http_query"),
            (f"prefetch: label POST -> next videos, annotator {think:g} s/query", f"prefetch_think_{think:g}s"),
            ("prefetch: label POST -> next videos, annotator answers at once", "prefetch_instant"),
            ("very first query, empty cache", "first_query_empty_cache"), ("video size per segment (KiB)", "video_kib")]
    columns = list(medians)
    lines = ["| median, seconds | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for title, key in rows:
        lines.append(f"| {title} | " + " | ".join(f"{medians[c][key]:.3f}" for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Walker2d-v5"])
    parser.add_argument("--queries", type=int, default=10, help="queries per measurement (2 segments each)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--think", type=float, default=3.0, help="seconds the simulated annotator looks at a query")
    parser.add_argument("--gl", nargs="+", choices=GL_SETTINGS, default=list(GL_SETTINGS),
                        help="MuJoCo offscreen quality: full (fast_rendering patched out, for comparison) and/or fast "
                             "(the library default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="label-latency-") as tmp:
        for env_id in args.envs:
            for gl in args.gl:
                results[f"{env_id} {gl} GL"] = measure(env_id, args.queries, args.width, args.height, args.think, gl,
                                                       Path(tmp))
    medians = summary(results, args.think)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "mujoco_gl": os.environ.get("MUJOCO_GL"), "loadavg_before": load_before,
               "loadavg_after": os.getloadavg(),
               "note": "2 cores shared with a training run and other jobs; times are wall-clock"}
    settings = {"segment_steps": LENGTH, "width": args.width, "height": args.height, "fps": 25,
                "queries": args.queries, "think_s": args.think, "codec": "VP8 (WebM)", "make_kwargs": MAKE_KWARGS,
                "gl": {"fast": "library default: envs.rendering.fast_rendering (offsamples 0, shadowsize <= 1024)",
                       "full": "robotrl.labelling.videos.fast_rendering patched to a no-op: the model's own quality"},
                "queries_from": "offline_queries.write_queries: uniform pairs of windows of one random-action "
                                "rollout of 2 * queries * segment_steps steps",
                "wall_s": time.perf_counter() - started}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "settings": settings, "medians_s": medians,
                                    "raw": results}, indent=1))
    print(table(medians, args.think))
    print(f"\nload average {load_before[0]:.2f} -> {machine['loadavg_after'][0]:.2f} on {machine['cpus']} cores; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()

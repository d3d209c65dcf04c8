"""Render stored segments of a label store to cached WebM videos, so people can compare them in a browser.

A segment is re-rendered from the simulator states recorded with its steps (`LabelStore.segment_states`): one frame per
real step, then the last frame darkened for each absorbing step, so "the episode ended here" is visible and both
videos of a query are equally long and loop in sync. All rendering happens in one worker thread that owns the env
(MuJoCo GL contexts belong to the thread that made them) and its own store connection (SQLite connections too).
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import threading
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

import envs  # sets the headless GL variables before anything imports mujoco
from envs.rendering import fast_rendering
from reward_learning.label_store import LabelStore, MissingStates

ABSORBING_BRIGHTNESS = 0.35  # absorbing steps repeat the last frame at this brightness
RENDER_TIMEOUT = 300.0  # seconds a request waits for its video before giving up
_URGENT, _AHEAD = 0, 1  # queue priorities: a video someone waits for, a prefetched one


class VideoUnavailable(ValueError):
    """A segment cannot be shown as a video (its store holds no simulator states)."""


class SegmentVideos:
    """Renders segments of the store at `store_path` to `cache_dir/<size>/segment-<id>.webm` (VP8), once each.

    Files are written under a temporary name and moved into place with `os.replace`, so a crash never leaves a half
    video under the final name, and a cached file is served as is. The cache folder is per frame size and camera, so
    relaunching with another size does not serve stale videos. Thread-safe: `path` and `prefetch` may be called from
    any thread; each segment is rendered at most once however many callers ask for it at the same time.
    """

    def __init__(self, store_path: str | Path, cache_dir: str | Path, *, width: int = 320, height: int = 240,
                 fps: int = 25, camera: str | int | None = None) -> None:
        """Prepare the cache folder and start the render thread (the env is built on the first render)."""
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"video size must be positive and even (VP8 uses 4:2:0 chroma), got {width}x{height}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.store_path = Path(store_path)
        self.width, self.height, self.fps, self.camera = width, height, fps, camera
        view = f"{width}x{height}"
        if camera is not None:
            view += "-camera-" + re.sub(r"[^A-Za-z0-9_-]", "_", str(camera))
        self.cache_dir = Path(cache_dir) / view
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.renders = 0  # videos rendered by this object (cache hits do not count)
        self._lock = threading.Lock()
        self._futures: dict[int, Future[Path]] = {}
        self._queue: queue.PriorityQueue[tuple[int, int, int | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="robotrl-segment-videos", daemon=True)
        self._thread.start()

    def cached_path(self, segment_id: int) -> Path:
        """Where the video of `segment_id` lives once rendered."""
        return self.cache_dir / f"segment-{int(segment_id)}.webm"

    def path(self, segment_id: int) -> Path:
        """The video file of `segment_id`, rendering it first if it is not cached yet (blocks until done).

        Raises ValueError for an unknown segment, VideoUnavailable when the store holds no simulator states.
        """
        final = self.cached_path(segment_id)
        if final.exists():
            return final
        return self._request(int(segment_id), _URGENT).result(timeout=RENDER_TIMEOUT)

    def prefetch(self, segment_ids: list[int]) -> None:
        """Queue segments to render in the background, in the order given, so nobody waits for them later."""
        for segment_id in segment_ids:
            if not self.cached_path(segment_id).exists():
                self._request(int(segment_id), _AHEAD)

    def close(self) -> None:
        """Stop the render thread after the video in progress; queued requests fail with RuntimeError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put((-1, -1, None))  # ahead of everything: stop now
        self._thread.join(timeout=RENDER_TIMEOUT)
        with self._lock:
            pending, self._futures = list(self._futures.values()), {}
        for future in pending:
            if not future.done():
                future.set_exception(RuntimeError("the segment video renderer was closed"))

    def __enter__(self) -> SegmentVideos:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ render thread

    def _request(self, segment_id: int, priority: int) -> Future[Path]:
        """The future of `segment_id`'s video, queueing it at `priority` (an urgent ask overtakes a prefetch)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the segment video renderer was closed")
            future = self._futures.get(segment_id)
            if future is None:
                future = self._futures[segment_id] = Future()
            elif priority == _AHEAD:
                return future  # already queued
            self._queue.put((priority, next(self._order), segment_id))
        return future

    def _work(self) -> None:
        """Render queued segments one at a time; the env and store connection live and die in this thread."""
        env: Any = None
        store: LabelStore | None = None
        try:
            while True:
                _, _, segment_id = self._queue.get()
                if segment_id is None:
                    return
                with self._lock:
                    future = self._futures.get(segment_id)
                if future is None or not future.set_running_or_notify_cancel():
                    continue  # already rendered through an earlier (duplicate) queue entry
                try:
                    if store is None:
                        store = LabelStore.open(self.store_path)
                    if env is None:
                        env = envs.make(store.env_id, width=self.width, height=self.height, camera=self.camera)
                        fast_rendering(env)
                        env.reset(seed=0)
                    result = self._render(store, env, segment_id)
                except Exception as error:  # handed to whoever waits for this video
                    outcome: tuple[Path | None, Exception | None] = (None, error)
                else:
                    outcome = (result, None)
                with self._lock:
                    self._futures.pop(segment_id, None)
                if outcome[1] is None:
                    future.set_result(outcome[0])
                else:
                    future.set_exception(outcome[1])
        finally:
            if env is not None:
                env.close()
            if store is not None:
                store.close()

    def _render(self, store: LabelStore, env: Any, segment_id: int) -> Path:
        """Render one segment and move the finished file into the cache."""
        final = self.cached_path(segment_id)
        if final.exists():
            return final
        info = store.segment_info(segment_id)
        try:
            states = store.segment_states(segment_id)
        except MissingStates as error:
            raise VideoUnavailable(
                f"segment {segment_id} of label store {self.store_path} cannot be shown: the store holds no "
                f"simulator states. Runs record them when they ask people for labels (reward teacher 'human'); "
                f"stores made by scripted-teacher runs before state recording existed cannot be shown") from error
        frames = []
        for state in states:
            envs.set_state(env, state)
            frames.append(np.asarray(env.render(), dtype=np.uint8))
        dark = (frames[-1] * ABSORBING_BRIGHTNESS).astype(np.uint8)
        frames += [dark] * (info.length - len(frames))
        self._encode(frames, final)
        self.renders += 1
        return final

    def _encode(self, frames: list[np.ndarray], final: Path) -> None:
        """Write `frames` as VP8 WebM to a temporary file in the cache folder, then atomically rename it."""
        import imageio.v2 as imageio

        tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex}.webm")
        try:
            with imageio.get_writer(
                    tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libvpx", quality=None, bitrate=None,
                    macro_block_size=2, ffmpeg_log_level="error",
                    output_params=["-crf", "8", "-b:v", "2M", "-deadline", "realtime", "-cpu-used", "8",
                                   "-threads", "1"]) as writer:
                for frame in frames:
                    writer.append_data(frame)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

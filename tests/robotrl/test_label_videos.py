"""`SegmentVideos`: stored Pendulum segments rendered from their simulator states to cached WebM files."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

import envs
from reward_learning.label_store import LabelStore
from reward_learning.segments import Segments
from robotrl.labelling.videos import SegmentVideos, VideoUnavailable

LENGTH = 10
SIZE = 64
WEBM_MAGIC = bytes.fromhex("1a45dfa3")  # EBML header of Matroska/WebM files


def rollout(steps: int, seed: int) -> dict[str, torch.Tensor]:
    """One Pendulum-v1 episode of random actions, with the simulator state after each step."""
    env = envs.make("Pendulum-v1", render_mode=None, record_state=True, seed=seed)
    obs, _ = env.reset(seed=seed)
    keys = ("obs", "action", "next_obs", "env_reward", "components", "state")
    steps_data: dict[str, list] = {key: [] for key in keys}
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, reward, _, _, info = env.step(action)
        values = (obs, action, next_obs, reward, list(info["reward_components"].values()), info["state"])
        for key, value in zip(keys, values, strict=True):
            steps_data[key].append(np.asarray(value))
        obs = next_obs
    env.close()
    return {key: torch.as_tensor(np.stack(value)) for key, value in steps_data.items()}


def slices(episode: dict[str, torch.Tensor], episode_id: int, starts: list[int], real: int = LENGTH,
           with_state: bool = True) -> Segments:
    """LENGTH-step slices of `episode`; with `real` < LENGTH the rest are absorbing steps repeating the last one."""
    steps = torch.tensor([[min(s + j, s + real - 1) for j in range(LENGTH)] for s in starts])
    fields = {key: value[steps] for key, value in episode.items() if with_state or key != "state"}
    fields = {key: value if key == "state" else value.float() for key, value in fields.items()}
    absorbing = torch.arange(LENGTH)[None, :].expand(len(starts), -1) >= real
    return Segments(**fields, episode=torch.full((len(starts),), episode_id, dtype=torch.int64),
                    start=torch.tensor(starts, dtype=torch.int64), absorbing=absorbing)


def pendulum_store(path: Path, queries: int = 3, with_state: bool = True) -> LabelStore:
    """A Pendulum-v1 store of 2 * `queries` segments (the last one ends after 6 real steps) and `queries` queries."""
    names = [component.name for component in envs.reward_spec("Pendulum-v1")]
    store = LabelStore(path, env_id="Pendulum-v1", obs_shape=(3,), action_dim=1, component_names=names)
    episode = rollout(LENGTH * 2 * queries, seed=0)
    full = slices(episode, 0, [LENGTH * i for i in range(2 * queries - 1)], with_state=with_state)
    ending = slices(episode, 0, [LENGTH * (2 * queries - 1)], real=6, with_state=with_state)
    ids = store.add_segments(Segments.concat([full, ending]), run="r")
    store.add_queries(ids[:queries], ids[queries:], round=0, sampler="uniform")
    return store


@pytest.fixture
def store_path(tmp_path) -> Path:
    path = tmp_path / "labels.sqlite"
    pendulum_store(path).close()
    return path


def read_frames(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return [np.asarray(frame) for frame in reader]


def test_renders_one_frame_per_step_and_darkens_absorbing_steps(store_path, tmp_path):
    with SegmentVideos(store_path, tmp_path / "cache", width=SIZE, height=SIZE) as videos:
        moving = read_frames(videos.path(1))
        ending = videos.path(6)  # 6 real steps, then 4 absorbing ones
        assert ending.read_bytes()[:4] == WEBM_MAGIC and ending.name == "segment-6.webm"
        frames = read_frames(ending)
        assert not list(videos.cache_dir.glob(".*")), "no temporary files are left behind"
    assert len(moving) == len(frames) == LENGTH and frames[0].shape == (SIZE, SIZE, 3)
    assert np.abs(moving[0].astype(int) - moving[-1]).mean() > 1, "the pendulum moves"
    brightness = [frame.mean() for frame in frames]
    assert all(b < 0.5 * brightness[5] for b in brightness[6:]), brightness
    assert np.allclose(brightness[6:], brightness[6], atol=2)


def test_cached_videos_are_not_rendered_again(store_path, tmp_path):
    with SegmentVideos(store_path, tmp_path / "cache", width=SIZE, height=SIZE) as videos:
        path = videos.path(2)
        stamp = path.stat().st_mtime_ns
        assert videos.path(2) == path and videos.renders == 1
    with SegmentVideos(store_path, tmp_path / "cache", width=SIZE, height=SIZE) as again:
        assert again.path(2) == path and again.renders == 0 and path.stat().st_mtime_ns == stamp
    with SegmentVideos(store_path, tmp_path / "cache", width=SIZE + 16, height=SIZE) as wider:
        assert wider.path(2) != path and wider.renders == 1  # another size has its own cache folder


def test_concurrent_requests_render_a_segment_once(store_path, tmp_path):
    with SegmentVideos(store_path, tmp_path / "cache", width=SIZE, height=SIZE) as videos:
        results: list[Path] = []
        threads = [threading.Thread(target=lambda: results.append(videos.path(3))) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(results)) == 1 and len(results) == 6 and videos.renders == 1


def test_prefetch_renders_in_the_background(store_path, tmp_path):
    with SegmentVideos(store_path, tmp_path / "cache", width=SIZE, height=SIZE) as videos:
        videos.prefetch([4, 5, 4])
        deadline = time.monotonic() + 20
        while not all(videos.cached_path(i).exists() for i in (4, 5)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert videos.path(4).exists() and videos.path(5).exists()
        assert videos.renders == 2


def test_unknown_segments_and_stores_without_states_fail_clearly(tmp_path):
    path = tmp_path / "no-states.sqlite"
    pendulum_store(path, with_state=False).close()
    with SegmentVideos(path, tmp_path / "cache", width=SIZE, height=SIZE) as videos:
        with pytest.raises(VideoUnavailable, match="simulator states.*teacher 'human'"):
            videos.path(1)
        with pytest.raises(ValueError, match="unknown segment id 99"):
            videos.path(99)
        assert not list(videos.cache_dir.iterdir())
    with pytest.raises(ValueError, match="even"):
        SegmentVideos(path, tmp_path / "cache", width=63, height=SIZE)

"""`robotrl eval --video` on a machine without a display writes decodable mp4s of the requested size."""

from __future__ import annotations

import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

from robotrl.policy import load_policy


@pytest.fixture(scope="module")
def trained_inverted_pendulum_run(tmp_path_factory, run_tiny_training):
    """A few hundred SAC steps on a MuJoCo env (InvertedPendulum-v5)."""
    run_dir = tmp_path_factory.mktemp("runs") / "inverted-pendulum-sac"
    return run_tiny_training(run_dir, "sac", env_id="InvertedPendulum-v5",
                             train={"total_steps": 300, "checkpoint_every": 300})


def eval_video(run, tmp_path, env, width: int, height: int) -> list[np.ndarray]:
    video_root = tmp_path / "videos"
    command = [sys.executable, "-m", "robotrl.cli", "eval", str(run), "--episodes", "1", "--video",
               "--video-dir", str(video_root), "--width", str(width), "--height", str(height)]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    path = video_root / run.name / "episode-000.mp4"
    assert path.exists(), done.stdout + done.stderr
    assert f"video: {path}" in done.stdout
    assert path.stat().st_size > 2_000
    reader = imageio.get_reader(path)
    try:
        frames = [frame for frame in reader]
    finally:
        reader.close()
    return frames


def check_frames(frames: list[np.ndarray], width: int, height: int, min_frames: int) -> None:
    assert len(frames) >= min_frames
    assert all(frame.shape == (height, width, 3) for frame in frames)
    distinct = {frame.tobytes() for frame in frames}
    assert len(distinct) > 1
    assert len(np.unique(frames[0].reshape(-1, 3), axis=0)) > 1  # not a blank frame


def test_headless_environment_has_no_display(headless_env):
    assert "DISPLAY" not in headless_env and "MUJOCO_GL" not in headless_env


def test_eval_video_classic_control_without_display(trained_pendulum_run, tmp_path, headless_env):
    frames = eval_video(trained_pendulum_run, tmp_path, headless_env, width=96, height=64)
    check_frames(frames, 96, 64, min_frames=201)  # the reset frame plus one per step of a 200-step episode


def test_eval_video_mujoco_without_display(trained_inverted_pendulum_run, tmp_path, headless_env):
    length = int(load_policy(trained_inverted_pendulum_run, device="cpu").evaluate(1).lengths[0])
    frames = eval_video(trained_inverted_pendulum_run, tmp_path, headless_env, width=80, height=64)
    check_frames(frames, 80, 64, min_frames=2)
    assert len(frames) == length + 1


def test_policy_evaluate_writes_video_in_process(trained_pendulum_run, tmp_path):
    policy = load_policy(trained_pendulum_run, device="cpu")
    result = policy.evaluate(1, video_dir=tmp_path / "v", width=64, height=48)
    assert result.videos == [tmp_path / "v" / "episode-000.mp4"] and result.lengths == [200]
    reader = imageio.get_reader(result.videos[0])
    try:
        first = reader.get_data(0)
    finally:
        reader.close()
    assert first.shape == (48, 64, 3)

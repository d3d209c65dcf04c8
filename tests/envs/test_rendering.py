"""Headless frames: size, dtype, camera choice, resizing, and the GL failure message."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from envs.rendering import gl_failure, is_gl_error, resize_frame


def assert_frame(frame: np.ndarray, height: int, width: int) -> None:
    """An HxWx3 uint8 frame that is not a single colour."""
    assert frame.shape == (height, width, 3)
    assert frame.dtype == np.uint8
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 1


def test_mujoco_frames_have_the_requested_size_and_camera():
    frames = {}
    for camera in (None, "track", -1, 0):
        env = envs.make("HalfCheetah-v5", width=64, height=48, camera=camera, seed=0)
        env.reset()
        env.step(env.action_space.sample())
        frames[camera] = env.render()
        assert_frame(frames[camera], 48, 64)
        env.close()
    assert not np.array_equal(frames["track"], frames[-1])  # a named camera differs from the free camera
    np.testing.assert_array_equal(frames["track"], frames[0])  # name and id of the same camera agree


def test_classic_control_frames_are_resized():
    pytest.importorskip("pygame", reason="classic control rendering needs gymnasium[classic-control] (pygame)")
    for env_id in ("CartPole-v1", "Pendulum-v1"):
        env = envs.make(env_id, width=80, height=60, seed=0)
        env.reset()
        assert_frame(env.render(), 60, 80)
        env.close()
    native = envs.make("Acrobot-v1", seed=0)
    native.reset()
    assert_frame(native.render(), 500, 500)
    native.close()


def test_resize_frame_bilinear():
    frame = np.zeros((4, 6, 3), dtype=np.uint8)
    frame[:, 3:] = 200
    small = resize_frame(frame, 2, 3)
    assert small.shape == (2, 3, 3) and small.dtype == np.uint8
    assert small[0, 0, 0] == 0 and small[0, 2, 0] == 200
    assert resize_frame(frame, None, 3).shape == (2, 3, 3)  # keeps the aspect ratio
    assert resize_frame(frame, 4, 6) is frame
    big = resize_frame(frame, 8, 12)
    assert big.shape == (8, 12, 3) and 0 < big[0, 6, 0] < 200  # blended edge


def test_gl_errors_are_recognised_and_explained():
    assert is_gl_error(RuntimeError("an OpenGL platform library has not been loaded into this process"))
    assert not is_gl_error(ValueError("Action dimension mismatch"))
    message = str(gl_failure(RuntimeError("Cannot initialize a EGL device display")))
    assert "MUJOCO_GL=osmesa" in message and "libosmesa6" in message and "MUJOCO_GL=egl" in message

"""Shared fixtures for the robotrl tests: tiny run configs and small trained runs.

This lives in tests/robotrl/ rather than tests/: pytest (prepend import mode) puts the folder of a conftest.py on
sys.path, and from tests/ the folders tests/envs, tests/robotrl and tests/reward_learning would then shadow the real
packages of the same names as namespace packages.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

import envs  # noqa: F401  (sets the headless GL variables before anything imports mujoco)

REPO = Path(__file__).resolve().parents[2]


def deep_update(base: dict, extra: dict) -> dict:
    """Recursively merge `extra` into a copy of `base`."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_base(kind: str = "sac", env_id: str | None = None, runs_dir: Path | str = "runs", **sections) -> dict:
    """A raw config dict for a run that finishes in a second or two (tiny networks, few steps, no TensorBoard)."""
    if kind == "ppo":
        algo_cfg = {"name": "ppo", "hidden_sizes": [16], "num_steps": 64, "minibatch_size": 64, "epochs": 2}
        env_id = env_id or "CartPole-v1"
    else:
        algo_cfg = {"name": kind, "hidden_sizes": [32, 32], "learning_starts": 100, "batch_size": 32,
                    "buffer_size": 10_000}
        env_id = env_id or "Pendulum-v1"
    raw = {
        "name": f"tiny-{kind}",
        "seed": 0,
        "device": "cpu",
        "runs_dir": str(runs_dir),
        "env": {"id": env_id},
        "algo": algo_cfg,
        "train": {"total_steps": 300, "eval_every": 0, "eval_episodes": 1, "checkpoint_every": 100,
                  "log_every": 50, "torch_threads": 1},
        "logging": {"tensorboard": False},
        "video": {"width": 64, "height": 48},
    }
    return deep_update(raw, sections)


@pytest.fixture
def tiny_raw(tmp_path):
    """Build a raw tiny config dict whose runs go under tmp_path: `tiny_raw("ppo", train={...})`."""

    def build(kind: str = "sac", env_id: str | None = None, **sections) -> dict:
        return tiny_base(kind, env_id, tmp_path / "runs", **sections)

    return build


@pytest.fixture
def tiny_config(tmp_path):
    """Build a validated tiny RunConfig: `tiny_config("sac", overrides=[...], train={...})`."""
    from robotrl.config import load_config

    def build(kind: str = "sac", overrides: tuple[str, ...] | list[str] = (), env_id: str | None = None, **sections):
        return load_config(None, list(overrides), base=tiny_base(kind, env_id, tmp_path / "runs", **sections))

    return build


def train_run(run_dir: Path, kind: str = "sac", env_id: str | None = None, **sections) -> Path:
    """Train a tiny run into `run_dir` and return it."""
    from robotrl.config import load_config
    from robotrl.trainer import Trainer

    config = load_config(None, [], base=tiny_base(kind, env_id, run_dir.parent, **sections))
    Trainer(config, run_dir=run_dir, progress=False).train()
    return run_dir


@pytest.fixture(scope="session")
def run_tiny_training():
    """`run_tiny_training(run_dir, kind, env_id, **sections)` trains a tiny run (for module-scoped fixtures)."""
    return train_run


@pytest.fixture(scope="session")
def trained_pendulum_run(tmp_path_factory) -> Path:
    """A finished 400-step SAC run on Pendulum-v1 (checkpoint, metrics with eval/return and episode returns)."""
    return train_run(tmp_path_factory.mktemp("runs") / "pendulum-sac", "sac", train={"total_steps": 400})


@pytest.fixture(scope="session")
def trained_cartpole_run(tmp_path_factory) -> Path:
    """A finished tiny PPO run on CartPole-v1."""
    return train_run(tmp_path_factory.mktemp("runs") / "cartpole-ppo", "ppo", train={"total_steps": 512})


@pytest.fixture
def headless_env() -> dict[str, str]:
    """The current environment without any display or preset GL backend (a server with no screen)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env["PYTHONPATH"] = str(REPO)
    return env

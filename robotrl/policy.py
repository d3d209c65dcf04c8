"""Load a trained run's policy for evaluation, videos, or use from Python."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import envs
from robotrl.agents import Agent
from robotrl.config import RunConfig, load_config
from robotrl.core import checkpoint as ckpt
from robotrl.core.device import resolve_device
from robotrl.evaluation import EvalResult, evaluate, make_eval_env
from robotrl.spaces import ActionAdapter
from robotrl.trainer import CHECKPOINT, build_agent


@dataclass
class Policy:
    """A trained agent with its config and action mapping; `act` takes raw env observations."""

    agent: Agent
    config: RunConfig
    adapter: ActionAdapter
    device: torch.device
    step: int

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Env action for one observation (or a batch)."""
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        single = obs_t.dim() == 1
        action = self.agent.act(obs_t.unsqueeze(0) if single else obs_t, deterministic=deterministic).cpu().numpy()
        env_action = self.adapter.to_env(action)
        return env_action[0] if single else env_action

    def evaluate(self, episodes: int, seed: int = 12345, video_dir: Path | None = None, width: int | None = None,
                 height: int | None = None, camera: str | int | None = None, deterministic: bool = True) -> EvalResult:
        """Evaluation episodes on a fresh env, with one mp4 per episode when `video_dir` is given (`width`, `height`
        and `camera` default to the run's video settings)."""
        if episodes <= 0:
            raise ValueError(f"episodes must be positive, got {episodes}")
        cfg = self.config
        video = cfg.video
        env = make_eval_env(cfg.env.id, cfg.env.kwargs, video_dir is not None,
                            video.width if width is None else width, video.height if height is None else height,
                            video.camera if camera is None else camera, cfg.env.max_episode_steps)
        try:
            return evaluate(self.agent, env, self.adapter, episodes, seed, self.device, video_dir, video.fps,
                            deterministic)
        finally:
            env.close()


def load_policy(run_dir: str | Path, device: str = "auto") -> Policy:
    """Rebuild the agent of a run from config.yaml and checkpoint.pt."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    torch_device = resolve_device(device)
    probe: gym.Env = envs.make(config.env.id, **config.env.kwargs)
    try:
        obs_dim = int(probe.observation_space.shape[0])
        adapter = ActionAdapter.from_space(probe.action_space)
        spec = probe.reward_spec
    finally:
        probe.close()
    agent = build_agent(config, obs_dim, adapter, torch_device, spec)
    state = ckpt.load(run_dir / CHECKPOINT, torch_device)
    agent.load_full_state(state["agent"])
    agent.eval()
    return Policy(agent, config, adapter, torch_device, state["step"])

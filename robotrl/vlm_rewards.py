"""Trainer-side glue for vision-language rewards: collect rendered frames, score them in large batches, and write the
rewards into the replay buffer in place.

How frames are obtained: the training envs record their simulator state after every step (`record_state`, which the
replay buffer stores per row), and a separate render env re-creates each frame from its state (`envs.set_state` +
`render()` at the model's resolution). This gets the true final frame of ended episodes (the vector env has already
reset them when the step returns) and works the same for sync and async envs.

When rewards are written: as for every `robotrl.pending_rewards.PendingRewards`, rows wait with a placeholder reward
of 0 and are scored together when a model batch fills, before every update round and before every checkpoint; with
`algo.train_every` >= batch_size / num_envs every model call is a full batch. `score_every: step` scores each vector
step on its own (one model call per step): the baseline of the benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

import envs
from envs.rendering import fast_rendering
from reward_learning.sources import RewardSource, Transitions
from reward_learning.vlm import FrameReward, VLMBackend, VLMReward, VLMWeightsError, build_backend
from reward_learning.vlm_success import SuccessClassifier
from reward_learning.vlm_teacher import VLMTeacher
from robotrl.agents import AGENTS
from robotrl.config import ConfigError, RunConfig, VLMConfig
from robotrl.core.buffers import ReplayBuffer
from robotrl.core.device import resolve_device
from robotrl.pending_rewards import PendingRewards, check_buffer_holds_a_batch


class StateRenderer:
    """Re-creates frames from simulator states with a render env of its own (reset once: classic-control envs have
    no state before)."""

    def __init__(self, render_env: envs.RewardComponentsWrapper) -> None:
        self.env = render_env

    def __call__(self, states: np.ndarray) -> np.ndarray:
        """uint8 frames [N, H, W, 3] of the simulator states [N, d]."""
        frames = []
        for state in states:
            envs.set_state(self.env, state)
            frames.append(self.env.render())
        return np.stack(frames)

    def close(self) -> None:
        self.env.close()


def load_backend(vlm: VLMConfig) -> VLMBackend:
    """The model a `reward.vlm` section names; missing or broken weights are a one-line `ConfigError`."""
    try:
        return build_backend(vlm.backend, vlm.model_path, resolve_device(vlm.device), vlm.model_name,
                             vlm.allow_download, vlm.precision)
    except VLMWeightsError as err:  # the CLI prints ConfigErrors as one clear line
        raise ConfigError(f"reward.vlm: {err}") from err


def load_vlm(config: RunConfig) -> tuple[FrameReward, StateRenderer]:
    """The configured vision-language reward (prompt similarity, or a fitted success head's probability) and a
    renderer of stored states at the model's resolution."""
    vlm = config.reward.vlm
    backend = load_backend(vlm)
    reward: FrameReward
    if vlm.success_head is not None:
        try:
            reward = SuccessClassifier.load(vlm.success_head, backend, vlm.batch_size)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"reward.vlm.success_head: {err}") from err
    else:
        reward = VLMReward(backend, vlm.goal_prompts, vlm.baseline_prompts, vlm.alpha, vlm.batch_size)
    size = backend.image_size
    render_env = envs.make(config.env.id, width=vlm.width or size, height=vlm.height or size, camera=vlm.camera,
                           max_episode_steps=config.env.max_episode_steps, **config.env.kwargs)
    if vlm.fast_rendering:
        fast_rendering(render_env)
    render_env.reset(seed=config.seed)
    return reward, StateRenderer(render_env)


class RenderedVLMReward(RewardSource):
    """The VLM reward of transitions that carry the simulator `state` after each step: frames are re-rendered and
    scored in batches (how `robotrl reward compare` measures a VLM reward against other sources)."""

    name = "vlm"
    needs = frozenset({"state"})

    def __init__(self, reward: FrameReward, render: StateRenderer) -> None:
        self.reward, self.render = reward, render

    def __call__(self, batch: Transitions) -> torch.Tensor:
        states = batch["state"].cpu().numpy()
        out = torch.empty(len(states), dtype=torch.float32)
        for start in range(0, len(states), self.reward.batch_size):  # render a model batch at a time: bounded memory
            chunk = states[start:start + self.reward.batch_size]
            out[start:start + len(chunk)] = self.reward.score_frames(self.render(chunk))
        return out

    def describe(self) -> dict[str, object]:
        return self.reward.describe()


def episode_vlm_rewards(config: RunConfig, act: Callable[[np.ndarray], np.ndarray] | None = None, seed: int = 0,
                        max_steps: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One episode of `act` (observation -> env action; None = uniformly random actions) in the config's env: its
    frames as the VLM sees them, and per step the VLM reward next to the env reward (for `robotrl reward
    vlm-episode`)."""
    reward, renderer = load_vlm(config)
    env = envs.make(config.env.id, render_mode=None, record_state=True, seed=seed,
                    max_episode_steps=config.env.max_episode_steps, **config.env.kwargs)
    states, env_rewards = [], []
    try:
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        done = False
        while not done and (max_steps is None or len(states) < max_steps):
            action = env.action_space.sample() if act is None else act(obs)
            obs, env_reward, terminated, truncated, info = env.step(action)
            states.append(info["state"])
            env_rewards.append(env_reward)
            done = terminated or truncated
        frames = renderer(np.stack(states))
    finally:
        env.close()
        renderer.close()
    return frames, {"vlm": reward.score_frames(frames).numpy(), "env": np.asarray(env_rewards, dtype=np.float64)}


def vlm_teacher(config: RunConfig) -> VLMTeacher:
    """`teacher: vlm`: the configured VLM judges preference queries (options `frames` and `margin` from
    `reward.preference.teacher_options`)."""
    options = dict(config.reward.preference.teacher_options)
    unknown = sorted(set(options) - {"frames", "margin"})
    if unknown:
        raise ConfigError(f"reward.preference.teacher_options: teacher vlm takes frames and margin, not {unknown}")
    reward, renderer = load_vlm(config)
    return VLMTeacher(reward, renderer, frames=int(options.get("frames", 1)), margin=options.get("margin", 0.0))


class VLMRewarder(PendingRewards):
    """Renders stored states, scores their frames with a frame reward a model batch at a time, and writes buffer
    rewards (when they are due: see `PendingRewards`)."""

    def __init__(self, reward: FrameReward, render: StateRenderer, score_every: str = "episode") -> None:
        if score_every not in ("episode", "step"):
            raise ValueError(f"score_every must be 'episode' or 'step'; got {score_every!r}")
        super().__init__(reward.batch_size, per_step=score_every == "step")
        self.reward = reward
        self.render = render
        self.frames_scored = 0
        self.model_calls = 0
        self.render_seconds = 0.0
        self.model_seconds = 0.0
        self.last_mean_reward = float("nan")

    @classmethod
    def from_config(cls, config: RunConfig) -> VLMRewarder:
        """Load the configured model and build the render env; clear errors for impossible settings."""
        vlm = config.reward.vlm
        if AGENTS[config.algo.name].on_policy:
            raise ConfigError(f"reward.source: vlm writes rewards into a replay buffer, so it needs an off-policy "
                              f"agent (sac, td3, tqc, ...); got algo.name={config.algo.name}")
        if vlm.score_every != "step":
            check_buffer_holds_a_batch(config, "reward.vlm.batch_size", vlm.batch_size)
        reward, renderer = load_vlm(config)
        return cls(reward, renderer, vlm.score_every)

    def score(self, buffer: ReplayBuffer, rows: torch.Tensor) -> torch.Tensor:
        """Render, embed and score the frames of `rows`."""
        started = time.perf_counter()
        frames = self.render(buffer.storage["state"][rows].cpu().numpy())
        rendered = time.perf_counter()
        rewards = self.reward.score_frames(frames)
        self.render_seconds += rendered - started
        self.model_seconds += time.perf_counter() - rendered
        self.model_calls += -(-len(rows) // self.reward.batch_size)
        if not torch.isfinite(rewards).all():
            raise FloatingPointError("the vision-language model returned NaN/inf rewards; check the weights")
        self.frames_scored += len(rows)
        self.last_mean_reward = float(rewards.mean())
        return rewards

    def metrics(self) -> dict[str, float]:
        """Counters for the metrics log: frames scored, model calls, time rendering vs in the model, mean reward."""
        return {"vlm/frames_scored": self.frames_scored, "vlm/model_calls": self.model_calls,
                "vlm/render_s": self.render_seconds, "vlm/model_s": self.model_seconds,
                "vlm/mean_reward": self.last_mean_reward}

    def close(self) -> None:
        """Close the render env."""
        self.render.close()

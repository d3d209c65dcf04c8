"""Offline labelling: sample query pairs from saved trajectories into a label store, for people to label in the web
page (`robotrl label`) and `robotrl reward train` to learn from afterwards.

Trajectories come from a run's replay buffer (when the run recorded simulator states), from fresh rollouts of a
run's policy, or from an offline dataset (.npz with D4RL-style keys plus the simulator states). All three are loaded
into a `ReplayBuffer`, so segments are cut exactly as during training (`ReplayBuffer.segment_indices`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import envs
from reward_learning.label_store import LabelStore
from robotrl.config import RunConfig, load_config
from robotrl.core import checkpoint as ckpt
from robotrl.core.buffers import ReplayBuffer
from robotrl.preference import segments_from_buffer
from robotrl.spaces import ActionAdapter
from robotrl.trainer import CHECKPOINT

DATASET_KEYS = ("observations", "actions", "rewards", "terminals", "states")  # required; optional: timeouts,
# next_observations, reward_components


def task_layout(env_id: str, kwargs: dict | None = None) -> tuple[ActionAdapter, list[str], tuple[int, ...]]:
    """Action adapter, reward component names and observation shape of an env id."""
    env = envs.make(env_id, render_mode=None, **(kwargs or {}))
    try:
        return (ActionAdapter.from_space(env.action_space), [c.name for c in env.reward_spec],
                tuple(env.observation_space.shape))
    finally:
        env.close()


def empty_buffer(capacity: int, obs_shape: tuple[int, ...], adapter: ActionAdapter, components: int,
                 state_dim: int) -> ReplayBuffer:
    return ReplayBuffer(capacity, obs_shape, adapter.stored_dim, components, "cpu", state_dim=state_dim)


def buffer_from_run(run_dir: Path, need_states: bool = True) -> tuple[RunConfig, ReplayBuffer, int]:
    """The replay buffer saved in a run's checkpoint, with the step stride of its vector envs; `need_states`: fail
    unless it recorded simulator states (needed to show its steps as video)."""
    config = load_config(run_dir / "config.yaml")
    state = ckpt.load(run_dir / CHECKPOINT, torch.device("cpu"))
    if "buffer" not in state:
        raise ValueError(f"{run_dir}'s checkpoint holds no replay buffer (on-policy runs keep none); use --rollouts")
    storage = state["buffer"]["storage"]
    if need_states and "state" not in storage:
        raise ValueError(f"{run_dir} did not record simulator states, so its stored steps cannot be shown as video; "
                         f"roll out its policy instead (--rollouts N), or train with reward.preference.record_states")
    adapter, names, obs_shape = task_layout(config.env.id, config.env.kwargs)
    state_dim = storage["state"].shape[1] if "state" in storage else 0
    buffer = empty_buffer(state["buffer"]["capacity"], obs_shape, adapter, len(names), state_dim)
    buffer.load_state_dict(state["buffer"])
    return config, buffer, config.env.num_envs


def buffer_from_rollouts(run_dir: Path, episodes: int, seed: int, deterministic: bool = False,
                         max_steps: int | None = None) -> tuple[RunConfig, ReplayBuffer]:
    """`episodes` fresh episodes of a run's policy (stochastic by default, for varied segments), with states;
    stopping early once `max_steps` steps are stored."""
    from robotrl.policy import load_policy

    policy = load_policy(run_dir, device="cpu")
    config = policy.config
    env = envs.make(config.env.id, render_mode=None, record_state=True, seed=seed,
                    max_episode_steps=config.env.max_episode_steps, **config.env.kwargs)

    def act(obs: np.ndarray) -> np.ndarray:
        return policy.agent.act(torch.as_tensor(obs, dtype=torch.float32)[None],
                                deterministic=deterministic).cpu().numpy()

    return config, rollout_buffer(env, act, policy.adapter, episodes, seed, max_steps, states=True)


def rollout_run_name(run_dir: Path, seed: int, store_path: Path) -> str:
    """The run name that rollouts of `run_dir`'s policy with `seed` are stored under: not the training run's own name
    (whose episodes are numbered from 0 too). Raises ValueError when the store already holds those rollouts (a
    policy's sampled actions are not reproducible, so they would clash): pass another seed for new episodes."""
    name = f"{run_dir.name}-rollouts-s{seed}"
    if store_path.is_file():
        with LabelStore.open(store_path) as store:
            if store.max_episode(name) >= 0:
                raise ValueError(f"{store_path} already holds rollouts of {run_dir} with seed {seed} (run {name!r}); "
                                 f"pass another --seed to add new episodes")
    return name


def rollout_buffer(env: gym.Env, act: Callable[[np.ndarray], np.ndarray], adapter: ActionAdapter, episodes: int,
                   seed: int, max_steps: int | None = None, states: bool = False) -> ReplayBuffer:
    """Episodes of `act` (observation -> stored action [1, stored_dim]) in `env`, which is closed afterwards:
    `episodes` of them, stopping early once `max_steps` steps are stored; with `states`, the simulator state after
    each step (the env must be made with record_state=True)."""
    try:
        env.reset()
        state_dim = len(envs.get_state(env)) if states else 0
        limit = env.max_episode_steps or 1000  # the registered envs all report theirs
        capacity = min(episodes * limit, max_steps or episodes * limit)
        buffer = empty_buffer(capacity, tuple(env.observation_space.shape), adapter, len(env.reward_spec), state_dim)
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            for t in range(limit):
                action = act(obs)
                next_obs, reward, terminated, truncated, info = env.step(adapter.to_env(action)[0])
                extra = {"state": info["state"][None]} if states else {}
                buffer.add(obs=obs[None], action=action, next_obs=next_obs[None], reward=[reward], env_reward=[reward],
                           components=[list(info["reward_components"].values())], terminated=[terminated],
                           truncated=[truncated], episode_step=[t], episode_id=[episode], **extra)
                obs = next_obs
                if terminated or truncated or len(buffer) == capacity:
                    break
            if len(buffer) == capacity:
                break
    finally:
        env.close()
    return buffer


def buffer_from_dataset(path: Path, env_id: str) -> ReplayBuffer:
    """An offline dataset (.npz): observations, actions (env units), rewards, terminals, states [N, d] (the simulator
    state after each step, see `envs.state`), and optionally timeouts, next_observations, reward_components.

    Without next_observations a step's next observation is the next row's, which the last step of every episode
    (terminal, timeout or the dataset's end) does not have: those steps are left out, so each episode ends one step
    earlier, cut short (truncated) rather than terminated. Give next_observations to keep them."""
    with np.load(path) as data:
        missing = [k for k in DATASET_KEYS if k not in data]
        if missing:
            hint = " (simulator states are needed to show segments as video)" if "states" in missing else ""
            raise ValueError(f"dataset {path} lacks {missing}{hint}; it has {sorted(data.files)}")
        arrays = {k: np.asarray(data[k]) for k in data.files}
    n = len(arrays["observations"])
    adapter, names, obs_shape = task_layout(env_id)
    if tuple(arrays["observations"].shape[1:]) != obs_shape:
        raise ValueError(f"dataset observations have shape {arrays['observations'].shape[1:]}, {env_id} has "
                         f"{obs_shape}")
    terminals = arrays["terminals"].astype(bool)
    ends = terminals | arrays.get("timeouts", np.zeros(n, bool)).astype(bool)
    ends[-1] = True
    episode_id = np.concatenate([[0], np.cumsum(ends[:-1])])
    first = np.concatenate([[True], ends[:-1]])
    starts = np.flatnonzero(first)
    episode_step = np.arange(n) - starts[episode_id]
    truncated = ends & ~terminals
    if "next_observations" in arrays:
        next_obs, keep = arrays["next_observations"], np.ones(n, bool)
    else:  # the next row's observation: each episode's last step has none and is left out
        next_obs = np.concatenate([arrays["observations"][1:], arrays["observations"][-1:]])
        keep = ~ends
        truncated = np.roll(ends, -1) & keep  # the new last step of each episode
        if not keep.any():
            raise ValueError(f"dataset {path} has only one-step episodes, whose next observations are unknown: add "
                             f"next_observations")
    components = arrays.get("reward_components", np.full((n, len(names)), np.nan, np.float32))
    buffer = empty_buffer(int(keep.sum()), obs_shape, adapter, len(names), arrays["states"].shape[1])
    rewards = arrays["rewards"].astype(np.float32)[keep]
    buffer.add(obs=arrays["observations"][keep], action=adapter.from_env(arrays["actions"][keep]),
               next_obs=next_obs[keep], reward=rewards, env_reward=rewards, components=components[keep],
               terminated=terminals[keep], truncated=truncated[keep], episode_step=episode_step[keep],
               episode_id=episode_id[keep], state=arrays["states"][keep])
    return buffer


def write_queries(buffer: ReplayBuffer, store: LabelStore, count: int, length: int, seed: int, run: str,
                  stride: int = 1) -> list[int]:
    """Sample `count` uniform pairs of `length`-step segments from `buffer` into `store`; returns the query ids."""
    generator = torch.Generator().manual_seed(seed)
    segments = segments_from_buffer(buffer, *buffer.segment_indices(length, 2 * count, stride, generator))
    left_ids = store.add_segments(segments[:count], run)
    right_ids = store.add_segments(segments[count:], run)
    return store.add_queries(left_ids, right_ids, round=0, sampler="uniform")

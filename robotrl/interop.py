"""Train gymnasium and Stable-Baselines3 agents on any `RewardSource` (a learned reward model, a component reweighting).

`RewardSourceWrapper` relabels one gymnasium env; `RewardVecEnvWrapper` relabels an SB3 VecEnv in one batched call per
step. Both hand the source the same batch keys and float32 tensors as robotrl's own trainer (actions in its agent
encoding, see `ActionAdapter`), keep the env reward in ``info["env_reward"]`` and the source's in
``info["learned_reward"]``. SB3 is imported only when `RewardVecEnvWrapper`
is first used (``pip install robotrl[bench]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from reward_learning import RewardSource
from robotrl.spaces import ActionAdapter

BATCH_KEYS = frozenset(
    {"obs", "action", "next_obs", "env_reward", "components", "terminated", "truncated", "episode_step"}
)
"""The keys both wrappers can build; a source that needs others (e.g. frames) is rejected up front."""

def declared_component_names(env: gym.Env) -> list[str] | None:
    """Component names in the order a robotrl env declares them (its `reward_spec`), or None for other envs."""
    try:
        spec = env.get_wrapper_attr("reward_spec")
    except AttributeError:
        return None
    return [component.name for component in spec]


class SourceLabeller:
    """Shared by both wrappers: builds the batch a reward source needs, calls it, and checks what it returns."""

    def __init__(self, source: RewardSource, component_names: Sequence[str] | None, device: str | torch.device,
                 action_space: gym.Space) -> None:
        """Check that the wrappers can provide every key `source` needs (actions of `action_space`)."""
        if not callable(source):
            raise TypeError(f"reward_source must be a RewardSource (callable on a batch); got {type(source).__name__}")
        self.source = source
        self.label = f"reward source {getattr(source, 'name', '?')!r} ({type(source).__name__})"
        needs = source.needs if getattr(source, "needs", None) is not None else BATCH_KEYS
        missing = sorted(set(needs) - BATCH_KEYS)
        if missing:
            raise ValueError(f"{self.label} needs {missing}, which these wrappers do not provide; "
                             f"they provide {sorted(BATCH_KEYS)}")
        self.needs = frozenset(needs)
        self.adapter = ActionAdapter.from_space(action_space) if "action" in self.needs else None
        self.component_names = None if component_names is None else list(component_names)
        self.device = torch.device(device)

    def actions(self, env_actions: np.ndarray) -> np.ndarray:
        """A batch of env actions as robotrl's buffers store them: [n, d] in [-1, 1] for a Box, [n, 1] indices for a
        Discrete space (what its reward models are trained on)."""
        assert self.adapter is not None
        return self.adapter.from_env(env_actions)

    def components(self, infos: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """[n, k] reward components from each step's ``info["reward_components"]``, in `component_names` order.

        Without declared names the order of the first reported dict is used from then on; envs that report no
        components give an [n, 0] array.
        """
        reported = [info.get("reward_components") for info in infos]
        if self.component_names is None:
            first = next((r for r in reported if r is not None), None)
            if first is None:
                return np.zeros((len(infos), 0), dtype=np.float32)
            self.component_names = list(first)
        if not self.component_names:
            return np.zeros((len(infos), 0), dtype=np.float32)
        rows = []
        for i, values in enumerate(reported):
            lacking = [n for n in self.component_names if values is None or n not in values]
            if lacking:
                raise ValueError(f"{self.label} needs reward components {self.component_names}, but env {i}'s "
                                 f"info['reward_components'] lacks {lacking} (it reports {list(values or {})}); "
                                 "pass component_names matching what the env reports")
            rows.append([values[n] for n in self.component_names])
        return np.asarray(rows, dtype=np.float32)

    def __call__(self, providers: Mapping[str, Any], n: int) -> np.ndarray:
        """Rewards [n] (float32) of the source on the keys it needs.

        `providers` maps each key to an array-like or to a zero-argument callable building it, so that costly keys
        are built only when the source needs them.
        """
        batch = {}
        for key in self.needs:
            value = providers[key]
            value = value() if callable(value) else value
            batch[key] = torch.as_tensor(np.asarray(value), dtype=torch.float32, device=self.device)
        with torch.no_grad():
            reward = self.source(batch)
        if not isinstance(reward, torch.Tensor):
            raise TypeError(f"{self.label} returned {type(reward).__name__}; it must return a torch.Tensor of shape "
                            f"[batch]")
        if tuple(reward.shape) != (n,):
            raise ValueError(f"{self.label} returned shape {tuple(reward.shape)} for a batch of {n} transitions; it "
                             f"must return one reward per transition, shape ({n},)")
        values = reward.detach().to(device="cpu", dtype=torch.float32).numpy()
        if not np.isfinite(values).all():
            raise ValueError(f"{self.label} returned non-finite rewards {values.tolist()}; check the model's inputs "
                             "and weights")
        return values


def _require_array_space(space: gym.Space, what: str) -> None:
    """Reject dict/tuple observation spaces: a batch holds one tensor per key."""
    if isinstance(space, gym.spaces.Dict | gym.spaces.Tuple):
        raise TypeError(f"{what} needs array observations, got {type(space).__name__}; flatten them first "
                        "(gymnasium.wrappers.FlattenObservation)")


class RewardSourceWrapper(gym.Wrapper):
    """Replaces a gymnasium env's reward by ``reward_source`` on each transition (a batch of one).

    The source gets float32 tensors on `device` for the keys it needs: obs, action (as robotrl's trainer stores it: in
    [-1, 1] for a Box, an index [1, 1] for a Discrete space), next_obs, env_reward, components
    (in `component_names` order, by default the order a robotrl env declares), terminated, truncated and episode_step
    (0 on the first step after reset). The info keeps ``"env_reward"`` and ``"learned_reward"``.

    Usage::

        env = RewardSourceWrapper(envs.make("Pendulum-v1"), reward_model)
        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())  # reward from reward_model
    """

    def __init__(
        self,
        env: gym.Env,
        reward_source: RewardSource,
        *,
        component_names: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        """Wrap `env`; `component_names` defaults to the env's declared reward components (if it is one of ours)."""
        super().__init__(env)
        _require_array_space(env.observation_space, "RewardSourceWrapper")
        names = component_names if component_names is not None else declared_component_names(env)
        self.labeller = SourceLabeller(reward_source, names, device, env.action_space)
        self.reward_source = reward_source
        self.episode_step = 0
        self._obs: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset the env and the episode step counter."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = obs
        self.episode_step = 0
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step the env and return the source's reward for this transition."""
        if self._obs is None:
            raise RuntimeError("call reset() before step() on a RewardSourceWrapper")
        next_obs, env_reward, terminated, truncated, info = self.env.step(action)
        providers = {
            "obs": np.asarray(self._obs)[None],
            "action": lambda: self.labeller.actions(np.asarray(action)[None]),
            "next_obs": np.asarray(next_obs)[None],
            "env_reward": [env_reward],
            "components": lambda: self.labeller.components([info]),
            "terminated": [terminated],
            "truncated": [truncated],
            "episode_step": [self.episode_step],
        }
        reward = float(self.labeller(providers, 1)[0])
        info["env_reward"] = float(env_reward)
        info["learned_reward"] = reward
        self._obs = next_obs
        self.episode_step += 1
        return next_obs, reward, terminated, truncated, info


class _RewardVecEnvMethods:
    """Replaces an SB3 VecEnv's rewards by ``reward_source``, batched over the envs in one call per step.

    The batch is as for `RewardSourceWrapper`. With SB3's auto-reset, next_obs of an env that just ended is its true
    final observation (``info["terminal_observation"]``), not the reset observation the VecEnv returns; truncated comes
    from ``info["TimeLimit.truncated"]``. Episode statistics of a `Monitor` inside the VecEnv stay in env reward.

    Usage::

        venv = RewardVecEnvWrapper(DummyVecEnv([lambda: Monitor(envs.make("Pendulum-v1"))] * 4), reward_model)
        model = SAC("MlpPolicy", venv)
        model.learn(10_000)  # trains on reward_model's rewards
    """

    venv: Any
    num_envs: int

    def __init__(
        self,
        venv: Any,
        reward_source: RewardSource,
        *,
        component_names: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        """Wrap `venv`; `component_names` defaults to the reward components its envs declare (if they are ours)."""
        super().__init__(venv)  # type: ignore[call-arg]  # VecEnvWrapper.__init__
        _require_array_space(venv.observation_space, "RewardVecEnvWrapper")
        if component_names is None and venv.has_attr("reward_spec"):
            component_names = [component.name for component in venv.get_attr("reward_spec", indices=[0])[0]]
        self.labeller = SourceLabeller(reward_source, component_names, device, venv.action_space)
        self.reward_source = reward_source
        self.episode_step = np.zeros(self.num_envs, dtype=np.int64)
        self._obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        """Reset all envs and their episode step counters."""
        obs = self.venv.reset()
        self._obs = np.array(obs)
        self.episode_step[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions (the batch's `action`) and pass them on."""
        self._actions = np.array(actions)
        self.venv.step_async(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step all envs and return the source's rewards."""
        if self._obs is None or self._actions is None:
            raise RuntimeError("call reset() before step() on a RewardVecEnvWrapper")
        obs, env_reward, dones, infos = self.venv.step_wait()
        dones = np.asarray(dones, dtype=bool)
        truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos]) & dones
        providers = {
            "obs": self._obs,
            "action": lambda: self.labeller.actions(self._actions),
            "next_obs": lambda: self._final_observations(obs, dones, infos),
            "env_reward": env_reward,
            "components": lambda: self.labeller.components(infos),
            "terminated": dones & ~truncated,
            "truncated": truncated,
            "episode_step": self.episode_step,
        }
        reward = self.labeller(providers, self.num_envs)
        for info, env_r, learned in zip(infos, env_reward, reward, strict=True):
            info["env_reward"] = float(env_r)
            info["learned_reward"] = float(learned)
        self._obs = np.array(obs)
        self.episode_step += 1
        self.episode_step[dones] = 0
        return obs, reward, dones, infos

    @staticmethod
    def _final_observations(obs: np.ndarray, dones: np.ndarray, infos: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The step's true next observations: the returned ones, with each ended env's terminal observation."""
        next_obs = np.array(obs)
        for i in np.flatnonzero(dones):
            if "terminal_observation" not in infos[i]:
                raise ValueError(f"env {i} ended but its info has no 'terminal_observation'; RewardVecEnvWrapper "
                                 "needs an SB3 VecEnv (DummyVecEnv, SubprocVecEnv) that reports it")
            next_obs[i] = infos[i]["terminal_observation"]
        return next_obs


def _vec_wrapper_class() -> type:
    """Build `RewardVecEnvWrapper` on top of SB3's VecEnvWrapper (imported here so SB3 stays optional)."""
    try:
        from stable_baselines3.common.vec_env import VecEnvWrapper
    except ImportError as error:
        raise ImportError(
            "RewardVecEnvWrapper needs Stable-Baselines3, which is not installed: pip install 'robotrl[bench]'"
        ) from error
    namespace = {"__module__": __name__, "__qualname__": "RewardVecEnvWrapper", "__doc__": _RewardVecEnvMethods.__doc__}
    return type("RewardVecEnvWrapper", (_RewardVecEnvMethods, VecEnvWrapper), namespace)


def __getattr__(name: str) -> Any:
    """Create `RewardVecEnvWrapper` on first access, so that importing this module does not import SB3."""
    if name == "RewardVecEnvWrapper":
        cls = _vec_wrapper_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


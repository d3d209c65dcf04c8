"""The thin wrapper `envs.make` puts around every env: reward components, success, seeding, headless frames."""

from __future__ import annotations

import weakref
from typing import Any

import gymnasium as gym
import numpy as np

from envs.components import RewardSpec, RewardTerms
from envs.rendering import gl_failure, is_gl_error, resize_frame
from envs.state import get_state, supports_state


class RewardComponentsWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Adds ``info["reward_components"]`` (and ``info["success"]`` where defined) to every step.

    Kept cheap on purpose (it runs inside training loops): no copies, one dict per step. The reward is returned as a
    Python float. `reward_spec` lists the components; reward == sum of signed weight * value.
    """

    def __init__(
        self,
        env: gym.Env,
        terms: RewardTerms | None = None,
        *,
        env_id: str,
        seed: int | None = None,
        frame_size: tuple[int | None, int | None] = (None, None),
        record_state: bool = False,
    ) -> None:
        """Wrap `env`; `seed` is used by the first reset and seeds the action space; frames come out at `frame_size`.
        With `record_state`, every step also puts the simulator state after the step in ``info["state"]``. `terms`
        default to the registered ones of `env_id`, built for this env (they may read its state)."""
        # recorded so `env.spec.make()` rebuilds the stack; terms are rebuilt for the new env, never shared
        gym.utils.RecordConstructorArgs.__init__(self, env_id=env_id, seed=seed, frame_size=frame_size,
                                                 record_state=record_state)
        super().__init__(env)
        if terms is None:
            from envs.registry import get_env_spec  # the registry imports this module

            terms = get_env_spec(env_id).reward_terms(env)
        self.env_id = env_id
        self.terms = terms
        self.reward_spec: RewardSpec = terms.spec
        self.has_success = terms.has_success
        self._names = tuple(component.name for component in terms.spec)
        overrides_hook = type(terms).before_step is not RewardTerms.before_step
        self._before_step = terms.before_step if overrides_hook else None
        self._pending_seed = seed
        self._frame_height, self._frame_width = frame_size
        self._closer: weakref.finalize | None = None
        self.record_state = record_state
        if record_state and not supports_state(env):
            raise TypeError(f"{env_id} cannot record simulator states (not MuJoCo and no `state` vector)")
        if seed is not None:
            self.action_space.seed(seed)

    @property
    def max_episode_steps(self) -> int | None:
        """The time limit in steps: from the gymnasium spec, else a `TimeLimit` wrapper or an env that keeps its own
        (Meta-World's, the driving envs' `max_episode_steps`); None for an env without one."""
        if self.spec is not None and self.spec.max_episode_steps:
            return int(self.spec.max_episode_steps)
        env: gym.Env = self.env
        while True:
            own = vars(env).get("max_episode_steps") or vars(env).get("_max_episode_steps")
            if own:
                return int(own)
            if not isinstance(env, gym.Wrapper):
                return None
            env = env.env

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset; the first reset without an explicit seed uses the seed given to `envs.make`."""
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step the env and attach the raw reward components (and success) to its info."""
        if self._before_step is not None:
            self._before_step()
        obs, reward, terminated, truncated, info = self.env.step(action)
        values = self.terms.values(action, terminated, info)
        info["reward_components"] = dict(zip(self._names, values, strict=True))
        if self.has_success:
            info["success"] = self.terms.success(values, terminated, info)
        if self.record_state:
            info["state"] = get_state(self.env)
        return obs, float(reward), terminated, truncated, info

    def render(self) -> np.ndarray:
        """An HxWx3 uint8 frame of the current state, rendered headless at the size asked of `envs.make`."""
        if self.env.render_mode != "rgb_array":
            raise RuntimeError(
                f"{self.env_id} was made with render_mode={self.env.render_mode!r}; "
                "pass render_mode='rgb_array' to envs.make to render"
            )
        try:
            frame = self.env.render()
        except Exception as error:
            if is_gl_error(error):
                raise gl_failure(error) from error
            raise
        if self._closer is None and hasattr(self.env.unwrapped, "mujoco_renderer"):
            # Free the GL context while the interpreter is still intact, even if the user never calls close().
            self._closer = weakref.finalize(self, self.env.close)
        if self._frame_height is not None or self._frame_width is not None:
            frame = resize_frame(frame, self._frame_height, self._frame_width)
        return frame

    def close(self) -> None:
        """Close the env (and its renderer)."""
        if self._closer is not None:
            self._closer.detach()
        super().close()

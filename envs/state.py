"""Simulator state capture and restore, so stored trajectories can be re-rendered later (e.g. for people to label).

`get_state(env)` returns a flat float64 vector that `set_state(env, state)` puts back exactly; `render()` then shows
that moment. MuJoCo envs use MuJoCo's physics state (qpos, qvel, actuator activations); classic-control envs their
`state` vector. Observations alone are not enough: HalfCheetah's omits the x position the tracking camera follows.
Other simulators plug in by giving one layer of the env (e.g. a wrapper) `simulator_state()` and
`restore_simulator_state(state)` methods (highway-env does, see `envs.highway_envs.DrivingEnv`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def _mujoco(env: gym.Env) -> tuple[Any, Any, Any] | None:
    """(mujoco module, model, data) when the env is MuJoCo-based, else None."""
    inner = env.unwrapped
    if not (hasattr(inner, "model") and hasattr(inner, "data")):
        return None
    import mujoco

    if not isinstance(inner.model, mujoco.MjModel):
        return None
    return mujoco, inner.model, inner.data


def _own_state(env: gym.Env) -> Any | None:
    """The outermost layer of `env` that captures its own state (`simulator_state` and `restore_simulator_state`)."""
    layer: Any = env
    while True:
        if hasattr(type(layer), "simulator_state") and hasattr(type(layer), "restore_simulator_state"):
            return layer
        if not isinstance(layer, gym.Wrapper):
            return None
        layer = layer.env


def supports_state(env: gym.Env) -> bool:
    """Whether `get_state`/`set_state` work for this env (classic-control envs only have a state after `reset`)."""
    inner = env.unwrapped
    return (_own_state(env) is not None or _mujoco(env) is not None or hasattr(inner, "state")
            or type(inner).__module__.startswith("gymnasium.envs.classic_control"))


def get_state(env: gym.Env) -> np.ndarray:
    """The simulator state of `env` as a new flat float64 array (call after `reset`)."""
    if (layer := _own_state(env)) is not None:
        return np.array(layer.simulator_state(), dtype=np.float64).reshape(-1)
    found = _mujoco(env)
    if found is not None:
        mujoco, model, data = found
        out = np.empty(mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_PHYSICS), dtype=np.float64)
        mujoco.mj_getState(model, data, out, mujoco.mjtState.mjSTATE_PHYSICS)
        return out
    state = getattr(env.unwrapped, "state", None)
    if state is None:
        raise TypeError(f"cannot capture the state of {env.unwrapped.__class__.__name__}: it is neither a MuJoCo env "
                        "nor has a `state` vector (reset it first if it is a classic-control env)")
    return np.array(state, dtype=np.float64).reshape(-1)


def set_state(env: gym.Env, state: np.ndarray) -> None:
    """Put `env` into a state returned by `get_state` (of an env of the same id), ready to `render()`."""
    state = np.asarray(state, dtype=np.float64).reshape(-1)
    if (layer := _own_state(env)) is not None:
        layer.restore_simulator_state(state)
        return
    found = _mujoco(env)
    if found is not None:
        mujoco, model, data = found
        size = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_PHYSICS)
        if state.size != size:
            raise ValueError(f"state has {state.size} values, but {env.unwrapped.__class__.__name__} has {size}")
        mujoco.mj_setState(model, data, state, mujoco.mjtState.mjSTATE_PHYSICS)
        mujoco.mj_forward(model, data)
        return
    inner = env.unwrapped
    current = getattr(inner, "state", None)
    if current is None:
        raise TypeError(f"cannot set the state of {inner.__class__.__name__}: it has no `state` vector")
    if np.size(current) != state.size:
        raise ValueError(f"state has {state.size} values, but {inner.__class__.__name__} has {np.size(current)}")
    inner.state = state.copy()  # float64 even where reset() made float32, so the round trip is exact
    if hasattr(inner, "last_u"):  # Pendulum draws the last torque; a restored state has none
        inner.last_u = None

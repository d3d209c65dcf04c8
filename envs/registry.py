"""The env registry and `make`: one `EnvSpec` per id, each with its own constructor and reward decomposition.

New simulator families (Meta-World, highway, CARLA, ...) plug in with `register(...)`: a constructor that builds the
raw gymnasium env and a `RewardTerms` class that decomposes its reward.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym

from envs.components import RewardSpec, RewardTerms
from envs.wrappers import RewardComponentsWrapper

RENDER_MODES = ("rgb_array", None)


class EnvConstructor(Protocol):
    """Builds the raw env (without our wrapper). Must be picklable (a module-level function or class instance) so
    that `make_vec(..., vectorization="async")` can rebuild it in worker processes."""

    def __call__(
        self,
        *,
        render_mode: str | None,
        width: int | None,
        height: int | None,
        camera: str | int | None,
        max_episode_steps: int | None,
        **kwargs: Any,
    ) -> gym.Env: ...


@dataclass(frozen=True)
class EnvSpec:
    """Everything needed to build one registered env id.

    `resize_frames`: the simulator renders at a fixed size, so `make` resizes frames to the requested width/height.
    `vector_kwargs`: extra `make` kwargs for env i of a vector env (multi-task ids give each env its own task); it
    must be picklable, as the spec goes to worker processes. `single_env_reason`: when set, `make_vec` refuses more
    than one env of this id and gives this reason (e.g. envs that would share one external simulator).
    """

    env_id: str
    constructor: EnvConstructor
    reward_terms: Callable[[gym.Env], RewardTerms]
    family: str = "custom"
    description: str = ""
    resize_frames: bool = False
    vector_kwargs: Callable[[int], dict[str, Any]] | None = None
    single_env_reason: str = ""


class UnknownEnvError(ValueError):
    """An env id that is not registered; the message lists close matches."""


_REGISTRY: dict[str, EnvSpec] = {}


def register(
    env_id: str,
    constructor: EnvConstructor,
    reward_terms: Callable[[gym.Env], RewardTerms],
    *,
    family: str = "custom",
    description: str = "",
    resize_frames: bool = False,
    vector_kwargs: Callable[[int], dict[str, Any]] | None = None,
    single_env_reason: str = "",
    overwrite: bool = False,
) -> EnvSpec:
    """Register `env_id` so that `envs.make(env_id)` works; re-registering an id needs ``overwrite=True``."""
    if env_id in _REGISTRY and not overwrite:
        raise ValueError(f"env id {env_id!r} is already registered; pass overwrite=True to replace it")
    spec = EnvSpec(env_id, constructor, reward_terms, family, description, resize_frames, vector_kwargs,
                   single_env_reason)
    _REGISTRY[env_id] = spec
    return spec


def list_envs(family: str | None = None) -> list[str]:
    """Registered env ids (optionally of one family), sorted."""
    return sorted(env_id for env_id, spec in _REGISTRY.items() if family is None or spec.family == family)


def close_matches(env_id: str, limit: int = 5) -> list[str]:
    """Registered ids that resemble `env_id`, ignoring case and the version suffix."""
    by_lower = {known.lower(): known for known in _REGISTRY}
    query = env_id.lower().strip()
    matches = difflib.get_close_matches(query, by_lower, n=limit, cutoff=0.5)
    stem = query.rsplit("-v", 1)[0]
    if stem:
        matches += [lower for lower in by_lower if stem in lower and lower not in matches]
    return [by_lower[lower] for lower in matches[:limit]]


def get_env_spec(env_id: str) -> EnvSpec:
    """The spec registered under `env_id`; an unknown id raises UnknownEnvError naming close matches."""
    try:
        return _REGISTRY[env_id]
    except KeyError:
        pass
    suggestions = close_matches(env_id)
    hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
    raise UnknownEnvError(
        f"Unknown env id {env_id!r}.{hint} Call envs.list_envs() to see all {len(_REGISTRY)} registered ids."
    )


def make(
    env_id: str | EnvSpec,
    *,
    render_mode: str | None = "rgb_array",
    width: int | None = None,
    height: int | None = None,
    camera: str | int | None = None,
    seed: int | None = None,
    max_episode_steps: int | None = None,
    record_state: bool = False,
    **kwargs: Any,
) -> RewardComponentsWrapper:
    """Build a registered env wrapped so every step reports its reward components (see `envs.components`).

    `env_id`: a registered id (or its `EnvSpec`, as worker processes pass). `render_mode`: "rgb_array" (the default;
    costs nothing until `render()` is called) or None. `width`/`height`: frame size (None: the simulator's default).
    `camera`: MuJoCo camera name or id. `seed`: used by the first reset and to seed the action space.
    `max_episode_steps`: override the time limit. `record_state`: put the simulator state after each step in
    ``info["state"]`` (see `envs.state`; for re-rendering stored trajectories). Other kwargs go to the simulator's
    constructor (e.g. ``ctrl_cost_weight=0.2``); a kwarg it does not take raises a TypeError naming it.
    """
    spec = env_id if isinstance(env_id, EnvSpec) else get_env_spec(env_id)
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES} (rendering is headless); got {render_mode!r}")
    for name, size in (("width", width), ("height", height)):
        if size is not None and (not isinstance(size, int) or size <= 0):
            raise ValueError(f"{name} must be a positive int; got {size!r}")
    env = spec.constructor(
        render_mode=render_mode,
        width=width,
        height=height,
        camera=camera,
        max_episode_steps=max_episode_steps,
        **kwargs,
    )
    frame_size = (height, width) if spec.resize_frames else (None, None)
    return RewardComponentsWrapper(env, spec.reward_terms(env), env_id=spec.env_id, seed=seed, frame_size=frame_size,
                                   record_state=record_state)


def reward_spec(env_id: str, **kwargs: Any) -> RewardSpec:
    """The reward spec `envs.make(env_id, **kwargs)` would have (builds the env once, without rendering)."""
    env = make(env_id, render_mode=None, **kwargs)
    try:
        return env.reward_spec
    finally:
        env.close()

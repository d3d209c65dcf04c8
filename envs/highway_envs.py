"""highway-env driving scenarios (highway-fast, merge, roundabout, intersection, racetrack) with separated rewards.

highway-env's own reward is not a weighted sum of its terms: it rescales them to [0, 1], multiplies by on_road, and the
intersection replaces it with the arrival bonus (merge and racetrack always rescale). So the reward of these envs is
*defined* as the weighted sum of the components below, computed by `DrivingEnv` from the simulator after each step;
highway-env's own reward is kept in ``info["native_reward"]`` for comparison with published numbers.

Components (raw values, in spec order) and their weights. The weights come from the highway-env config, so that its
usual keys (``collision_reward=-2``, ...) keep working, with its sign convention (negative = penalty); the two
``*_weight`` keys are ours (plain non-negative weights):

- ``collision`` (minimize, ``-collision_reward``): 1.0 once the ego vehicle has crashed.
- ``speed`` (maximize, ``high_speed_reward``): the ego's speed along its lane, mapped linearly from
  ``reward_speed_range`` to [0, 1] and clipped.
- ``right_lane`` (maximize, ``right_lane_reward``): index of the ego's current lane / (lanes of its road - 1).
- ``lane_centering`` (maximize, ``lane_centering_reward``): 1 / (1 + lane_centering_cost * lateral offset^2).
- ``on_road`` (maximize, ``on_road_weight``, default 1): 1.0 while the ego is on a lane.
- ``action_change`` (minimize, ``action_change_weight``): comfort. Continuous control: sum over action entries of
  |a_t - a_(t-1)| on actions clipped to [-1, 1] (default weight 0.05); discrete actions: 1.0 when the action differs
  from the previous one (default weight 0, as highway-env has no such term). 0 on the first step of an episode.
- ``arrived`` (maximize, ``arrived_reward``; intersection only): 1.0 once the ego has reached its exit.

highway-env reward keys that no component uses (``lane_change_reward``, merge's ``merging_speed_reward``,
racetrack's ``action_reward``, ``normalize_reward``) are rejected with a TypeError naming the option to use instead
(`UNUSED_REWARD_KEYS`), rather than silently ignored.

Keys a scenario's config lacks get our defaults (e.g. ``high_speed_reward=0`` for racetrack). Actions: ``action=
"discrete"`` (highway-env's meta-actions; racetrack: 5 steering angles, as its vehicles cannot use meta-actions) or
``"continuous"`` (throttle and steering; racetrack: steering only), or a highway-env action config dict.

Episodes end on highway-env's termination (crash; merge: past the ramp; intersection: arrived; racetrack: off the road)
or after ``max_episode_steps`` policy steps (default: the scenario's ``duration`` x ``policy_frequency``; merge, which
has no time limit in highway-env, gets 40 s). ``info["success"]``: the episode ended this step without a collision
and with the ego on the road (False on every other step).

Observations are flat float32 vectors (highway-env's Kinematics by default; with continuous control each row also
gets the lane-relative ``lat_off`` and ``ang_off`` so that a steering policy can see the lane). Frames are rendered
headless (pygame with SDL_VIDEODRIVER=dummy) at ``width`` x ``height``, zoomed so that the scenario's default view
still fits (unless ``scaling``, in pixels per metre, is given). `envs.get_state` captures a fixed-size
kinematic snapshot of the ego and the nearest other vehicles for re-rendering (see `DrivingEnv.simulator_state`).
highway_env is imported when the first env is made, not by ``import envs``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from envs.components import RewardComponent, RewardSpec, RewardTerms, spec_weights_vector
from envs.registry import register

ActionKind = Literal["discrete", "continuous"]
ACTION_TYPES = {"discrete": "DiscreteMetaAction", "continuous": "ContinuousAction"}
LANE_FEATURES = ("lat_off", "ang_off")
# Config keys our reward reads that some scenarios lack, with their defaults.
OWN_KEYS = {
    "high_speed_reward": 0.0,
    "right_lane_reward": 0.0,
    "lane_centering_reward": 0.0,
    "lane_centering_cost": 4.0,
    "on_road_weight": 1.0,
}
# highway-env reward keys our reward reads (arrived_reward: intersection only); its other reward keys are rejected.
USED_REWARD_KEYS = ("collision_reward", "high_speed_reward", "right_lane_reward", "lane_centering_reward",
                    "reward_speed_range", "arrived_reward")
# What to use instead of highway-env's reward keys that no component reads.
UNUSED_REWARD_KEYS = {
    "lane_change_reward": "action_change_weight (weight of the comfort component: with discrete actions it counts "
                          "every change of meta-action)",
    "action_reward": "action_change_weight (our comfort component penalises changes of the action, not its size)",
    "merging_speed_reward": "high_speed_reward (the ego's own speed; the merging car's speed is not a component)",
    "normalize_reward": "the component weights (the reward is their weighted sum, never rescaled)",
}
STATE_FIELDS = 6  # per vehicle: x, y, heading, speed, crashed, steering
MIN_STATE_VEHICLES = 32


@dataclass(frozen=True, eq=False)  # eq=False: hashable by identity despite its dict fields
class Scenario:
    """One highway-env scenario and the defaults our wrapper adds to it."""

    highway_id: str
    action: ActionKind
    speed_range: tuple[float, float]  # for reward_speed_range where highway-env has none
    duration: float | None = None  # seconds, where highway-env has no time limit
    observation: dict[str, Any] | None = None  # replaces highway-env's default observation config
    arrival: bool = False  # has an `arrived` component (intersection)
    meta_action_terms: bool = False  # highway-env's own reward tests `action in [0, 2]` (lane-change meta-actions)
    discrete_action: dict[str, Any] | None = None  # for scenarios where highway-env's meta-actions do not work


@cache
def _env_class(highway_id: str, meta_action_terms: bool) -> type:
    """The highway-env class behind a highway-env gymnasium id (imports highway_env, which registers its ids).

    With `meta_action_terms`, a subclass whose own (informational) reward treats a continuous action as no lane
    change: merge's and roundabout's test `action in [0, 2]`, which fails on arrays.
    """
    import highway_env  # noqa: F401
    from gymnasium.envs.registration import load_env_creator

    base = load_env_creator(gym.spec(highway_id).entry_point)
    if not meta_action_terms:
        return base

    def _rewards(self: Any, action: Any) -> dict[str, float]:
        return base._rewards(self, action if np.ndim(action) == 0 else -1)

    return type(base.__name__, (base,), {"_rewards": _rewards, "__doc__": base.__doc__})


def unused_reward_keys(defaults: dict[str, Any]) -> set[str]:
    """The reward keys of a highway-env config that no component of ours reads."""
    return {key for key in defaults if "reward" in key and key not in USED_REWARD_KEYS}


@dataclass(frozen=True)
class HighwayConstructor:
    """Builds one scenario as a `DrivingEnv`; picklable so that async vector envs can rebuild it."""

    env_id: str
    scenario: Scenario

    def __call__(self, *, render_mode: str | None, width: int | None, height: int | None, camera: str | int | None,
                 max_episode_steps: int | None, action: ActionKind | dict[str, Any] | None = None,
                 observation: dict[str, Any] | None = None, **config: Any) -> DrivingEnv:
        """`action`: "discrete" (meta-actions; racetrack: steering angles), "continuous" (throttle and steering;
        racetrack: steering) or a highway-env action config. `observation`: a highway-env observation config
        (default: flat Kinematics). Other kwargs are highway-env config keys (e.g. ``vehicles_count=10``,
        ``collision_reward=-2``) or our reward keys (``on_road_weight``, ``action_change_weight``)."""
        if camera is not None:
            raise ValueError(f"{self.env_id} has no cameras (camera= applies to MuJoCo envs); got camera={camera!r}")
        env_class = _env_class(self.scenario.highway_id, self.scenario.meta_action_terms)
        defaults = env_class.default_config()
        self._check_keys(config, defaults)
        kind = self._action_kind(action)
        full = {**defaults, **self._own_defaults(defaults, kind)}
        full["action"] = action if isinstance(action, dict) else self._action_config(defaults["action"], kind)
        full["observation"] = observation or self._observation_config(defaults["observation"], kind)
        full.update(config)
        self._frame_size(full, width, height, scaling_given="scaling" in config)
        if max_episode_steps is not None:
            full["duration"] = max_episode_steps / full["policy_frequency"]
        env = env_class(config=full, render_mode=render_mode)
        return DrivingEnv(env, self.scenario, kind)

    @staticmethod
    def _frame_size(config: dict[str, Any], width: int | None, height: int | None, scaling_given: bool) -> None:
        """Set the frame size; unless `scaling` (pixels per metre) is given, zoom so the default view still fits."""
        default_width, default_height = config["screen_width"], config["screen_height"]
        config["screen_width"] = width or default_width
        config["screen_height"] = height or default_height
        if not scaling_given:
            zoom = min(config["screen_width"] / default_width, config["screen_height"] / default_height)
            config["scaling"] = config["scaling"] * zoom

    def _check_keys(self, config: dict[str, Any], defaults: dict[str, Any]) -> None:
        """Reject config keys neither highway-env nor our reward knows (highway-env would silently ignore them), and
        highway-env reward keys that our reward does not use."""
        ignored = unused_reward_keys(defaults)
        unused = sorted(key for key in config if key in ignored)
        if unused:
            instead = "; ".join(f"instead of {key!r} use {UNUSED_REWARD_KEYS.get(key, 'the component weights')}"
                                for key in unused)
            raise TypeError(
                f"{self.env_id}: highway-env reward key(s) {', '.join(map(repr, unused))} would be ignored: this env's "
                f"reward is the weighted sum of its components (see envs.highway_envs), whose weights come from "
                f"{', '.join(key for key in USED_REWARD_KEYS if key in defaults)}, on_road_weight and "
                f"action_change_weight; {instead}."
            )
        accepted = set(defaults) | set(OWN_KEYS) | {"action_change_weight", "reward_speed_range", "duration"}
        accepted -= {"action", "observation", "screen_width", "screen_height", *ignored}
        unknown = sorted(set(config) - accepted)
        if not unknown:
            return
        hints = []
        for name in unknown:
            if name in ("screen_width", "screen_height"):
                hints.append(f"use make(..., width=, height=) instead of {name!r}")
            elif close := difflib.get_close_matches(name, sorted(accepted), n=1, cutoff=0.6):
                hints.append(f"{name!r} -> did you mean {close[0]!r}?")
        raise TypeError(
            f"{self.env_id} does not accept keyword argument(s) {', '.join(map(repr, unknown))}"
            f"{' (' + '; '.join(hints) + ')' if hints else ''}. Accepted: action, observation, and the highway-env "
            f"config keys {', '.join(sorted(accepted))}."
        )

    def _action_kind(self, action: ActionKind | dict[str, Any] | None) -> ActionKind:
        """Whether the action space will be discrete or continuous."""
        if action is None:
            return self.scenario.action
        if isinstance(action, dict):
            return "continuous" if action.get("type") == "ContinuousAction" else "discrete"
        if action not in ACTION_TYPES:
            raise ValueError(f"{self.env_id}: action must be 'discrete', 'continuous' or a highway-env action config "
                             f"dict; got {action!r}")
        return action

    def _own_defaults(self, defaults: dict[str, Any], kind: ActionKind) -> dict[str, Any]:
        """Our reward keys (and the time limit) where the scenario's config lacks them."""
        own = {key: value for key, value in OWN_KEYS.items() if key not in defaults}
        own["action_change_weight"] = 0.05 if kind == "continuous" else 0.0
        if "reward_speed_range" not in defaults:
            own["reward_speed_range"] = list(self.scenario.speed_range)
        if "duration" not in defaults:
            own["duration"] = self.scenario.duration
        return own

    def _action_config(self, default: dict[str, Any], kind: ActionKind) -> dict[str, Any]:
        """The scenario's own action config when it is of the requested kind, else the plain one of that kind."""
        if default["type"] == ACTION_TYPES[kind]:
            return dict(default)
        if kind == "discrete" and self.scenario.discrete_action is not None:
            return dict(self.scenario.discrete_action)
        config: dict[str, Any] = {"type": ACTION_TYPES[kind]}
        if kind == "discrete" and "target_speeds" in default:
            config["target_speeds"] = default["target_speeds"]
        return config

    def _observation_config(self, default: dict[str, Any], kind: ActionKind) -> dict[str, Any]:
        """Kinematics (the scenario's, or ours for racetrack), with lane offsets added for continuous control."""
        config = dict(self.scenario.observation or default)
        if kind == "continuous" and config.get("type") == "Kinematics":
            features = list(config.get("features") or ["presence", "x", "y", "vx", "vy"])
            config["features"] = features + [name for name in LANE_FEATURES if name not in features]
        return config


class DrivingEnv(gym.Wrapper):
    """A highway-env env whose reward is the weighted sum of separated components (see the module docstring).

    Also flattens observations, counts the time limit in policy steps, sets ``info["success"]``, and captures and
    restores kinematic snapshots for `envs.get_state` / `envs.set_state`.
    """

    def __init__(self, env: gym.Env, scenario: Scenario, action_kind: ActionKind) -> None:
        """Read the reward weights and the time limit from the built env's config."""
        super().__init__(env)
        self.action_kind = action_kind
        config = env.unwrapped.config
        self.max_episode_steps = max(1, round(config["duration"] * config["policy_frequency"]))
        self.arrival = scenario.arrival
        self.reward_spec = self._spec(config)
        self._weights = spec_weights_vector(self.reward_spec)
        self._names = tuple(component.name for component in self.reward_spec)
        inner = env.observation_space
        self._flatten = isinstance(inner, gym.spaces.Box) and len(inner.shape) > 1
        if self._flatten:
            self.observation_space = gym.spaces.Box(
                inner.low.reshape(-1), inner.high.reshape(-1), (int(np.prod(inner.shape)),), inner.dtype
            )
        self._previous_action: Any = None
        self._steps = 0

    def _spec(self, config: dict[str, Any]) -> RewardSpec:
        """Components with weights from the highway-env config (negative config values are penalties)."""
        low, high = config["reward_speed_range"]
        comfort = ("sum of |a_t - a_(t-1)| over action entries clipped to [-1, 1]" if self.action_kind == "continuous"
                   else "1.0 when the meta-action differs from the previous one")
        spec = [
            RewardComponent("collision", 0.0 - config["collision_reward"], "minimize",
                            "1.0 once the ego vehicle has crashed (the episode then terminates)"),
            RewardComponent("speed", float(config["high_speed_reward"]), "maximize",
                            f"speed along the lane mapped from [{low}, {high}] m/s to [0, 1], clipped"),
            RewardComponent("right_lane", float(config["right_lane_reward"]), "maximize",
                            "current lane index / (lanes of the road - 1): 1.0 on the rightmost lane"),
            RewardComponent("lane_centering", float(config["lane_centering_reward"]), "maximize",
                            f"1 / (1 + {config['lane_centering_cost']} * lateral offset from the lane centre^2)"),
            RewardComponent("on_road", float(config["on_road_weight"]), "maximize", "1.0 while the ego is on a lane"),
            RewardComponent("action_change", float(config["action_change_weight"]), "minimize",
                            f"comfort: {comfort}; 0 on the first step"),
        ]
        if self.arrival:
            spec.append(RewardComponent("arrived", float(config["arrived_reward"]), "maximize",
                                        "1.0 once the ego has reached its exit (the episode then terminates)"))
        return tuple(spec)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset the scene, the step count and the previous action."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._previous_action = None
        self._steps = 0
        return self._observe(obs), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step highway-env and replace its reward by the weighted component sum."""
        obs, native_reward, terminated, _, info = self.env.step(action)
        self._steps += 1
        values = self._values(action)
        reward = float(np.dot(values, self._weights))
        truncated = self._steps >= self.max_episode_steps
        ego = self.env.unwrapped.vehicle
        info["native_reward"] = float(native_reward)
        info["reward_components"] = dict(zip(self._names, values, strict=True))
        info["success"] = bool((terminated or truncated) and not ego.crashed and ego.on_road)
        return self._observe(obs), reward, bool(terminated), truncated, info

    def render(self) -> np.ndarray | None:
        """An RGB frame drawn off-screen. highway-env's viewer draws nothing when SDL_VIDEODRIVER=dummy (which
        `envs` sets for headless pygame), although its off-screen surfaces work under that driver: enable it."""
        inner = self.env.unwrapped
        if inner.render_mode == "rgb_array" and inner.viewer is None:
            from highway_env.envs.common.graphics import EnvViewer

            inner.viewer = EnvViewer(inner)
            inner.viewer.enabled = True
        return self.env.render()

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        """The observation as a flat vector."""
        return obs.reshape(-1) if self._flatten else obs

    def _values(self, action: Any) -> list[float]:
        """Raw component values after the step, from the ego vehicle's state."""
        inner = self.env.unwrapped
        ego = inner.vehicle
        lane = ego.lane
        longitudinal, lateral = lane.local_coordinates(ego.position)
        forward_speed = ego.speed * np.cos(ego.heading - lane.heading_at(longitudinal))
        low, high = inner.config["reward_speed_range"]
        lanes = len(inner.road.network.all_side_lanes(ego.lane_index))
        values = [
            float(ego.crashed),
            float(np.clip((forward_speed - low) / (high - low), 0.0, 1.0)),
            ego.lane_index[2] / max(lanes - 1, 1),
            1.0 / (1.0 + inner.config["lane_centering_cost"] * lateral**2),
            float(ego.on_road),
            self._action_change(action),
        ]
        if self.arrival:
            values.append(float(inner.has_arrived(ego)))
        return [float(value) for value in values]

    def _action_change(self, action: Any) -> float:
        """Comfort term: how much the action changed since the previous step (and remember this one)."""
        previous = self._previous_action
        if self.action_kind == "continuous":
            current = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
            change = 0.0 if previous is None else float(np.abs(current - previous).sum())
        else:
            current = int(action)
            change = 0.0 if previous is None else float(current != previous)
        self._previous_action = current
        return change

    # ----------------------------------------------------------------------------------------------------------------
    # State capture for re-rendering (used by envs.get_state / envs.set_state)

    @property
    def state_capacity(self) -> int:
        """How many vehicles a state vector holds (the ego and the nearest others)."""
        config = self.env.unwrapped.config
        return max(MIN_STATE_VEHICLES, int(config.get("vehicles_count", 0)) + 1)

    def simulator_state(self) -> np.ndarray:
        """[number of vehicles, then x, y, heading, speed, crashed, steering per vehicle (ego first, then the
        others in road order, zero-padded)]: what the renderer draws. Where the road holds more vehicles than
        `state_capacity`, the farthest from the ego are left out. Drivers' internal plans (target lanes, routes)
        are not part of it: restoring a state is exact for rendering, not for continuing the simulation."""
        inner = self.env.unwrapped
        ego = inner.vehicle
        others = [vehicle for vehicle in inner.road.vehicles if vehicle is not ego]
        capacity = self.state_capacity
        if len(others) >= capacity:
            nearest = sorted(range(len(others)), key=lambda i: np.linalg.norm(others[i].position - ego.position))
            others = [others[i] for i in sorted(nearest[: capacity - 1])]
        vehicles = [ego, *others]
        state = np.zeros(1 + capacity * STATE_FIELDS, dtype=np.float64)
        state[0] = len(vehicles)
        rows = state[1:].reshape(capacity, STATE_FIELDS)
        for row, vehicle in zip(rows, vehicles, strict=False):
            row[:] = (*vehicle.position, vehicle.heading, vehicle.speed, vehicle.crashed, vehicle.action["steering"])
        return state

    def restore_simulator_state(self, state: np.ndarray) -> None:
        """Put the vehicles where a `simulator_state` vector says, reusing this road's vehicles (and creating
        vehicles of the scenario's traffic class where it has too few)."""
        capacity = self.state_capacity
        if state.size != 1 + capacity * STATE_FIELDS:
            raise ValueError(f"state has {state.size} values, but this driving env has {1 + capacity * STATE_FIELDS}")
        count = int(state[0])
        if not 1 <= count <= capacity:
            raise ValueError(f"state holds {count} vehicles; expected 1 to {capacity}")
        from highway_env import utils

        inner = self.env.unwrapped
        road, ego = inner.road, inner.vehicle
        others = [vehicle for vehicle in road.vehicles if vehicle is not ego][: count - 1]
        traffic_class = utils.class_from_path(inner.config["other_vehicles_type"])
        while len(others) < count - 1:
            others.append(traffic_class(road, [0.0, 0.0]))
        road.vehicles = [ego, *others]
        for row, vehicle in zip(state[1:].reshape(capacity, STATE_FIELDS), road.vehicles, strict=False):
            x, y, heading, speed, crashed, steering = (float(value) for value in row)
            vehicle.position = np.array([x, y], dtype=np.float64)
            vehicle.heading, vehicle.speed, vehicle.crashed = heading, speed, bool(crashed)
            vehicle.action["steering"] = steering
            vehicle.on_state_update()


class HighwayTerms(RewardTerms):
    """Reads the components and success that `DrivingEnv` computed (its reward is their weighted sum)."""

    has_success = True

    def __init__(self, env: gym.Env) -> None:
        """Take the spec from the `DrivingEnv` the constructor built."""
        super().__init__(env)
        if not isinstance(env, DrivingEnv):
            raise TypeError(f"HighwayTerms needs the DrivingEnv built by HighwayConstructor; got {type(env).__name__}")
        self.spec = env.reward_spec

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        """The components `DrivingEnv` put in the info, in spec order."""
        return list(info["reward_components"].values())

    def success(self, values: list[float], terminated: bool, info: dict[str, Any]) -> bool:
        """Ended this step without a collision, on the road."""
        return info["success"]


# Meta-actions need lane-following vehicles, which highway-env's racetrack cannot place: quantise the steering instead.
_RACETRACK_DISCRETE = {"type": "DiscreteAction", "longitudinal": False, "lateral": True, "actions_per_axis": 5}
_RACETRACK_OBSERVATION = {"type": "Kinematics", "features": ["presence", "x", "y", "vx", "vy", "cos_h", "sin_h"]}

_SCENARIOS = {
    "highway/highway-fast-v0": (
        Scenario("highway-fast-v0", "discrete", (20.0, 30.0)),
        "overtake on a 3-lane highway: fast, right-hand lanes, no collisions (highway-env highway-fast-v0)",
    ),
    "highway/merge-v0": (
        Scenario("merge-v1", "discrete", (20.0, 30.0), duration=40.0, meta_action_terms=True),
        "pass a highway on-ramp where a vehicle merges in (highway-env merge-v1)",
    ),
    "highway/roundabout-v0": (
        Scenario("roundabout-v1", "discrete", (0.0, 16.0), meta_action_terms=True),
        "drive through a busy roundabout without collisions (highway-env roundabout-v1)",
    ),
    "highway/intersection-v0": (
        Scenario("intersection-v2", "discrete", (7.0, 9.0), arrival=True),
        "turn left across an unsignalised 4-way intersection (highway-env intersection-v2)",
    ),
    "highway/racetrack-v0": (
        Scenario("racetrack-v1", "continuous", (0.0, 10.0), observation=_RACETRACK_OBSERVATION,
                 discrete_action=_RACETRACK_DISCRETE),
        "follow a winding 2-lane racetrack by steering, avoiding other cars (highway-env racetrack-v1); discrete "
        "actions are 5 steering angles",
    ),
}


def register_highway_envs() -> None:
    """Register the driving scenarios (idempotent; highway_env itself is imported only when one is made)."""
    for env_id, (scenario, description) in _SCENARIOS.items():
        register(env_id, HighwayConstructor(env_id, scenario), HighwayTerms, family="driving",
                 description=description, overwrite=True)

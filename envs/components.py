"""Reward components: what each env's reward is made of, as raw quantities with signed weights.

Contract: for every env made by `envs.make`, on every step
``reward == sum(+w if direction == "maximize" else -w) * value`` over the env's `reward_spec`, where the values are
the raw (unweighted) quantities placed in ``info["reward_components"]`` in spec order.

Each gymnasium env gets a `RewardTerms` subclass that reads the weights from the env's own attributes (so kwargs such
as ``ctrl_cost_weight=0.2`` are reflected) and recovers the raw values cheaply from the step's info or the simulator
state. The formulas follow the ``step()`` methods of gymnasium 1.4.0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np

Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class RewardComponent:
    """One term of an env reward: the reward adds ``weight * value`` (maximize) or subtracts it (minimize)."""

    name: str
    weight: float
    direction: Direction
    description: str

    def __post_init__(self) -> None:
        """Reject a direction other than maximize/minimize early."""
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"RewardComponent {self.name!r}: direction must be 'maximize' or 'minimize'")

    @property
    def signed_weight(self) -> float:
        """The weight with the direction's sign: +weight to maximize, -weight to minimize."""
        return self.weight if self.direction == "maximize" else -self.weight


RewardSpec = tuple[RewardComponent, ...]


def spec_weights_vector(spec: Sequence[RewardComponent]) -> np.ndarray:
    """Signed weights in spec order, so that ``reward = components_array @ spec_weights_vector(spec)``."""
    return np.array([component.signed_weight for component in spec], dtype=np.float64)


def combine_components(
    spec: Sequence[RewardComponent], components: Mapping[str, float] | np.ndarray | Sequence[float]
) -> float | np.ndarray:
    """Reward from components: a name -> value mapping gives a float; an array [..., k] gives an array [...]."""
    if isinstance(components, Mapping):
        missing = [c.name for c in spec if c.name not in components]
        if missing:
            raise KeyError(f"components lack {missing}; the spec needs {[c.name for c in spec]}")
        return float(sum(c.signed_weight * float(components[c.name]) for c in spec))
    values = np.asarray(components, dtype=np.float64)
    if values.shape[-1:] != (len(spec),):
        raise ValueError(f"components have shape {values.shape}; the last axis must have the {len(spec)} spec entries")
    result = values @ spec_weights_vector(spec)
    return float(result) if result.ndim == 0 else result


class RewardTerms:
    """Base class: knows one env's reward spec and turns each step into raw component values (and success).

    Subclasses set `spec` in ``__init__`` and implement `values`. Set `has_success` and implement `success` where the
    task defines success; override `before_step` only if the reward depends on the state before the step.
    """

    spec: RewardSpec = ()
    has_success: bool = False

    def __init__(self, env: gym.Env) -> None:
        """Remember the innermost env, whose attributes hold the reward weights and the simulator state."""
        self.unwrapped = env.unwrapped

    def before_step(self) -> None:
        """Hook called just before each step (only if a subclass overrides it)."""

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        """Raw component values of the step just taken, in spec order."""
        raise NotImplementedError

    def success(self, values: list[float], terminated: bool, info: dict[str, Any]) -> bool:
        """Whether the step just taken achieves the task (only called when `has_success`)."""
        return False


def _action_energy(action: Any) -> float:
    """Sum of squared action entries."""
    return float(np.sum(np.square(action)))


def _unweighted(weighted: Any, weight: float) -> float | None:
    """Recover the raw value from a weighted term, or None when the weight is zero (caller recomputes)."""
    return float(weighted) / weight if weight != 0.0 else None


# --------------------------------------------------------------------------------------------------------------------
# MuJoCo v5


class LocomotionTerms(RewardTerms):
    """HalfCheetah, Hopper, Walker2d, Ant, Humanoid, Swimmer (v5).

    reward = forward_reward_weight * forward_velocity + healthy_reward * healthy
             - ctrl_cost_weight * control_cost - contact_cost_weight * contact_cost
    (healthy only where the env has a healthy reward; contact cost only for Ant and Humanoid).
    """

    def __init__(self, env: gym.Env) -> None:
        """Read the weights the env was built with."""
        super().__init__(env)
        u = self.unwrapped
        self._healthy_weight: float | None = float(u._healthy_reward) if hasattr(u, "_healthy_reward") else None
        self._ctrl_weight = float(u._ctrl_cost_weight)
        self._contact_weight: float | None = (
            float(u._contact_cost_weight) if hasattr(u, "_contact_cost_weight") else None
        )
        is_humanoid = hasattr(u, "_contact_cost_range")  # Humanoid: centre-of-mass velocity, capped contact cost
        velocity_of = "centre of mass" if is_humanoid else "main body"
        spec = [
            RewardComponent(
                "forward_velocity",
                float(u._forward_reward_weight),
                "maximize",
                f"x velocity of the {velocity_of} over the step (m/s), the env's info['x_velocity']",
            )
        ]
        if self._healthy_weight is not None:
            healthy = "1.0 if the robot is healthy after the step (per the env's healthy ranges)"
            spec.append(RewardComponent("healthy", self._healthy_weight, "maximize", healthy))
        spec.append(RewardComponent("control_cost", self._ctrl_weight, "minimize", "sum of squared action entries"))
        if self._contact_weight is not None:
            if is_humanoid:  # Humanoid clips the weighted cost to contact_cost_range
                detail = "sum of squared external contact forces (cfrc_ext), capped at contact_cost_range[1] / weight"
            else:  # Ant clips each force to contact_force_range first
                detail = "sum of squared external contact forces (cfrc_ext), each clipped to contact_force_range"
            spec.append(RewardComponent("contact_cost", self._contact_weight, "minimize", detail))
        self.spec = tuple(spec)

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        """Forward velocity from info; the other terms un-weighted from info (recomputed when a weight is zero)."""
        out = [float(info["x_velocity"])]
        if self._healthy_weight is not None:
            healthy = _unweighted(info["reward_survive"], self._healthy_weight)
            out.append(float(self.unwrapped.is_healthy) if healthy is None else healthy)
        ctrl = _unweighted(info["reward_ctrl"], self._ctrl_weight)
        out.append(_action_energy(action) if ctrl is None else -ctrl)
        if self._contact_weight is not None:
            contact = _unweighted(info["reward_contact"], self._contact_weight)
            out.append(self._raw_contact_cost() if contact is None else -contact)
        return out

    def _raw_contact_cost(self) -> float:
        """Contact cost before weighting, used only when its weight is zero."""
        u = self.unwrapped
        forces = u.contact_forces if hasattr(u, "_contact_force_range") else u.data.cfrc_ext
        return float(np.sum(np.square(forces)))


class ReacherTerms(RewardTerms):
    """Reacher-v5: reward = -reward_dist_weight * distance - reward_control_weight * control_cost.

    Success (our definition; gymnasium has none): fingertip within 0.05 m of the target. For scale: the arm reaches
    0.21 m, targets lie within 0.2 m of its base, and the fingertip sphere has radius 0.01 m.
    """

    has_success = True
    SUCCESS_DISTANCE = 0.05

    def __init__(self, env: gym.Env) -> None:
        """Read the weights and cache the body ids used for the distance."""
        super().__init__(env)
        u = self.unwrapped
        self._ctrl_weight = float(u._reward_control_weight)
        self._fingertip = u.data.body("fingertip").id
        self._target = u.data.body("target").id
        self.spec = (
            RewardComponent(
                "distance", float(u._reward_dist_weight), "minimize", "Euclidean fingertip-to-target distance (m)"
            ),
            RewardComponent("control_cost", self._ctrl_weight, "minimize", "sum of squared action entries"),
        )

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        """Distance from the body positions; control cost un-weighted from info."""
        xpos = self.unwrapped.data.xpos
        distance = float(np.linalg.norm(xpos[self._fingertip] - xpos[self._target]))
        ctrl = _unweighted(info["reward_ctrl"], self._ctrl_weight)
        return [distance, _action_energy(action) if ctrl is None else -ctrl]

    def success(self, values: list[float], terminated: bool, info: dict[str, Any]) -> bool:
        """Fingertip within SUCCESS_DISTANCE of the target."""
        return values[0] < self.SUCCESS_DISTANCE


class InvertedPendulumTerms(RewardTerms):
    """InvertedPendulum-v5: reward = 1 per step while the pole is within 0.2 rad, 0 on the terminating step."""

    def __init__(self, env: gym.Env) -> None:
        """Fixed spec: the env has no reward kwargs."""
        super().__init__(env)
        self.spec = (RewardComponent("alive", 1.0, "maximize", "1.0 unless this step terminated the episode"),)

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        """1.0 while not terminated."""
        return [0.0 if terminated else 1.0]


class InvertedDoublePendulumTerms(RewardTerms):
    """InvertedDoublePendulum-v5: healthy_reward * alive - 0.01 x^2 - (y - 2)^2 - 1e-3 w1^2 - 5e-3 w2^2.

    (x, y) is the pole tip position and w1, w2 the hinge angular velocities after the step; the four penalty weights
    are constants of gymnasium's implementation.
    """

    def __init__(self, env: gym.Env) -> None:
        """Read the alive bonus the env was built with."""
        super().__init__(env)
        self.spec = (
            RewardComponent(
                "alive", float(self.unwrapped._healthy_reward), "maximize", "1.0 unless this step ended the episode"
            ),
            RewardComponent("tip_x_squared", 0.01, "minimize", "squared x position of the pole tip (m^2)"),
            RewardComponent(
                "tip_height_error_squared", 1.0, "minimize", "squared gap between the tip height and 2 m (m^2)"
            ),
            RewardComponent(
                "hinge1_velocity_squared", 1e-3, "minimize", "squared angular velocity of the first hinge (rad^2/s^2)"
            ),
            RewardComponent(
                "hinge2_velocity_squared", 5e-3, "minimize", "squared angular velocity of the second hinge (rad^2/s^2)"
            ),
        )

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        """Recompute the terms from the simulator state after the step."""
        data = self.unwrapped.data
        x, _, y = data.site_xpos[0]
        w1, w2 = data.qvel[1:3]
        return [0.0 if terminated else 1.0, float(x * x), float((y - 2.0) ** 2), float(w1 * w1), float(w2 * w2)]


# --------------------------------------------------------------------------------------------------------------------
# Classic control


def _wrap_angle(angle: float) -> float:
    """Angle wrapped to [-pi, pi), exactly as gymnasium's Pendulum does."""
    return ((angle + math.pi) % (2 * math.pi)) - math.pi


class PendulumTerms(RewardTerms):
    """Pendulum-v1: reward = -(angle^2 + 0.1 * angular_velocity^2 + 0.001 * torque^2).

    Angle and velocity are taken BEFORE the step (as gymnasium does); the torque is the action clipped to +-2.
    """

    def __init__(self, env: gym.Env) -> None:
        """Fixed spec: the weights are constants of the env."""
        super().__init__(env)
        self._theta = 0.0
        self._theta_dot = 0.0
        self.spec = (
            RewardComponent("angle_squared", 1.0, "minimize", "squared pole angle from upright, wrapped to [-pi, pi)"),
            RewardComponent("angular_velocity_squared", 0.1, "minimize", "squared pole angular velocity (rad^2/s^2)"),
            RewardComponent("torque_squared", 0.001, "minimize", "squared applied torque, after clipping to [-2, 2]"),
        )

    def before_step(self) -> None:
        """The cost uses the pre-step state: remember it."""
        self._theta, self._theta_dot = self.unwrapped.state

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        """Costs of the pre-step state and the clipped torque."""
        torque = float(self.unwrapped.last_u)
        return [_wrap_angle(float(self._theta)) ** 2, float(self._theta_dot) ** 2, torque * torque]


class CartPoleTerms(RewardTerms):
    """CartPole-v1: 'upright' is 1.0 on every step up to and including the one where the pole falls (0 after),
    'fallen' is 1.0 on that step and after. Default reward = upright (weights 1, 0); with
    ``sutton_barto_reward=True`` the reward is -fallen (weights 0, 1).
    """

    def __init__(self, env: gym.Env) -> None:
        """Pick the weights from sutton_barto_reward."""
        super().__init__(env)
        sutton_barto = bool(self.unwrapped._sutton_barto_reward)
        self.spec = (
            RewardComponent(
                "upright", 0.0 if sutton_barto else 1.0, "maximize", "1.0 until and including the step the pole falls"
            ),
            RewardComponent(
                "fallen", 1.0 if sutton_barto else 0.0, "minimize", "1.0 from the step the pole falls onwards"
            ),
        )

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        """Derived from terminated and how many steps were taken past the fall."""
        if not terminated:
            return [1.0, 0.0]
        return [1.0 if self.unwrapped.steps_beyond_terminated == 0 else 0.0, 1.0]


class MountainCarContinuousTerms(RewardTerms):
    """MountainCarContinuous-v0: reward = 100 * goal_reached - 0.1 * action^2.

    The cost uses the action as given (gymnasium clips only the force applied to the car). Success: the goal is reached
    (position >= 0.45 with velocity >= goal_velocity), i.e. the step terminated.
    """

    has_success = True

    def __init__(self, env: gym.Env) -> None:
        """Fixed spec: the weights are constants of the env."""
        super().__init__(env)
        self.spec = (
            RewardComponent("goal_reached", 100.0, "maximize", "1.0 on the step the car reaches the goal"),
            RewardComponent("control_cost", 0.1, "minimize", "squared action, as given (not clipped)"),
        )

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        """Goal flag and squared action."""
        force = float(action[0])
        return [1.0 if terminated else 0.0, force * force]

    def success(self, values: list[float], terminated: bool, info: dict[str, Any]) -> bool:
        """Reached the goal."""
        return values[0] == 1.0


class AcrobotTerms(RewardTerms):
    """Acrobot-v1: reward = -1 per step until the tip swings above the bar (0 on that step).

    Success: the tip reached the target height, i.e. the step terminated.
    """

    has_success = True

    def __init__(self, env: gym.Env) -> None:
        """Fixed spec."""
        super().__init__(env)
        self.spec = (RewardComponent("not_at_goal", 1.0, "minimize", "1.0 on each step that ends below the target"),)

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        """1.0 unless the goal was reached."""
        return [0.0 if terminated else 1.0]

    def success(self, values: list[float], terminated: bool, info: dict[str, Any]) -> bool:
        """Reached the target height."""
        return values[0] == 0.0

"""Gymnasium's classic control and MuJoCo v5 envs, registered with their reward decompositions."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from functools import cache
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from envs import components as c
from envs.registry import register
from envs.rendering import gl_failure, is_gl_error

# Arguments `envs.make` sets itself; users pass them as make(..., width=, height=, camera=, render_mode=).
_RESERVED = frozenset(
    {"self", "render_mode", "width", "height", "camera_id", "camera_name", "model_path", "observation_space"}
)


@cache
def accepted_kwargs(gym_id: str) -> frozenset[str]:
    """Keyword arguments the gymnasium env's constructor takes (for MuJoCo also those of MujocoEnv)."""
    creator = load_env_creator(gym.spec(gym_id).entry_point)
    target = creator.__init__ if inspect.isclass(creator) else creator
    params = inspect.signature(target).parameters
    names = {name for name, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

        if inspect.isclass(creator) and issubclass(creator, MujocoEnv):
            names |= set(inspect.signature(MujocoEnv.__init__).parameters)
    return frozenset(names - _RESERVED)


def _camera_names(model: Any) -> list[str]:
    """Names of the cameras defined in a MuJoCo model."""
    import mujoco

    names = (mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam))
    return [name for name in names if name]


@dataclass(frozen=True)
class GymnasiumConstructor:
    """Builds a gymnasium env by id (env checker off), checking kwargs and, for MuJoCo, the camera."""

    gym_id: str
    mujoco: bool
    default_camera: str | None = None  # for models whose default view does not follow the robot

    def __call__(
        self,
        *,
        render_mode: str | None,
        width: int | None,
        height: int | None,
        camera: str | int | None,
        max_episode_steps: int | None,
        **kwargs: Any,
    ) -> gym.Env:
        """Build the env; bad kwargs raise TypeError and unknown cameras ValueError, both naming the env id."""
        try:
            unknown = sorted(set(kwargs) - accepted_kwargs(self.gym_id))  # imports the env's module (and mujoco)
        except Exception as error:
            if self.mujoco and is_gl_error(error):
                raise gl_failure(error, doing="load its OpenGL backend") from error
            raise
        if unknown:
            raise TypeError(self._bad_kwargs_message(unknown))
        if self.mujoco:
            camera = self.default_camera if camera is None else camera
            if width is not None:
                kwargs["width"] = width
            if height is not None:
                kwargs["height"] = height
            if isinstance(camera, str):
                kwargs["camera_name"] = camera
            elif camera is not None:
                kwargs["camera_id"] = int(camera)
        elif camera is not None:
            raise ValueError(f"{self.gym_id} has no cameras (camera= applies to MuJoCo envs); got camera={camera!r}")
        env = gym.make(
            self.gym_id,
            render_mode=render_mode,
            max_episode_steps=max_episode_steps,
            disable_env_checker=True,
            **kwargs,
        )
        if self.mujoco and camera is not None and camera != self.default_camera:
            self._check_camera(env, camera)
        return env

    def _bad_kwargs_message(self, unknown: list[str]) -> str:
        """Name the rejected kwargs, suggest near misses, and list what the env takes."""
        accepted = sorted(accepted_kwargs(self.gym_id))
        hints = []
        for name in unknown:
            if name in ("camera_id", "camera_name"):
                hints.append(f"use make(..., camera=...) instead of {name!r}")
            elif close := difflib.get_close_matches(name, accepted, n=1, cutoff=0.6):
                hints.append(f"{name!r} -> did you mean {close[0]!r}?")
        return (
            f"{self.gym_id} does not accept keyword argument(s) {', '.join(map(repr, unknown))}"
            f"{' (' + '; '.join(hints) + ')' if hints else ''}. Accepted: {', '.join(accepted) or 'none'}."
        )

    def _check_camera(self, env: gym.Env, camera: str | int) -> None:
        """Fail clearly on a camera the model does not have (MuJoCo would silently use the free camera)."""
        model = env.unwrapped.model
        names = _camera_names(model)
        valid = camera in names if isinstance(camera, str) else -1 <= int(camera) < model.ncam
        if not valid:
            env.close()
            raise ValueError(
                f"{self.gym_id} has no camera {camera!r}; cameras: {names or 'none'} (ids 0..{model.ncam - 1}), "
                "or -1 for the free camera"
            )


_CLASSIC = {
    "Pendulum-v1": (c.PendulumTerms, "swing a pendulum up and hold it (continuous torque)"),
    "CartPole-v1": (c.CartPoleTerms, "balance a pole on a cart (discrete push left/right)"),
    "MountainCarContinuous-v0": (c.MountainCarContinuousTerms, "drive an underpowered car up a hill (continuous)"),
    "Acrobot-v1": (c.AcrobotTerms, "swing a two-link arm above a bar (discrete torque)"),
}

_MUJOCO = {
    "HalfCheetah-v5": (c.LocomotionTerms, "planar cheetah running forward", "track"),
    "Hopper-v5": (c.LocomotionTerms, "planar one-legged hopper moving forward without falling"),
    "Walker2d-v5": (c.LocomotionTerms, "planar biped walking forward without falling"),
    "Ant-v5": (c.LocomotionTerms, "quadruped walking forward", "track"),
    "Humanoid-v5": (c.LocomotionTerms, "3D humanoid walking forward without falling"),
    "Swimmer-v5": (c.LocomotionTerms, "three-link swimmer moving forward in a viscous fluid", "track"),
    "Reacher-v5": (c.ReacherTerms, "two-link arm reaching a random target"),
    "InvertedPendulum-v5": (c.InvertedPendulumTerms, "balance a pole on a cart (continuous force)"),
    "InvertedDoublePendulum-v5": (c.InvertedDoublePendulumTerms, "balance two stacked poles on a cart"),
}


def register_gymnasium_envs() -> None:
    """Register the built-in gymnasium ids (idempotent)."""
    for family, table, mujoco in (("classic_control", _CLASSIC, False), ("mujoco", _MUJOCO, True)):
        for env_id, (terms, description, *camera) in table.items():
            register(env_id, GymnasiumConstructor(env_id, mujoco, *camera), terms, family=family,
                     description=description, resize_frames=not mujoco, overwrite=True)

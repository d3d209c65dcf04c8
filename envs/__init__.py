"""robotrl's simulators behind one gymnasium API, with reward components on every step.

Public API: `make`, `make_vec`, `VecEnv`, `register`, `list_envs`, `get_env_spec`, `reward_spec`, `EnvSpec`,
`UnknownEnvError`, `get_state`, `set_state`, `supports_state`, `RewardComponent`, `RewardTerms`,
`combine_components`, `spec_weights_vector`, `expert_policy` (Meta-World's scripted experts).
Importing `envs` sets MUJOCO_GL=egl (PYOPENGL_PLATFORM to match) and SDL_VIDEODRIVER=dummy unless already set, so
import it before anything imports mujoco.
"""

# ruff: noqa: E402  (the GL variables must be set before any import below can pull in mujoco or PyOpenGL)
from envs.rendering import configure_headless_gl

HEADLESS_GL_BACKEND = configure_headless_gl()

from envs.carla_env import register_carla_envs
from envs.components import RewardComponent, RewardSpec, RewardTerms, combine_components, spec_weights_vector
from envs.gym_envs import register_gymnasium_envs
from envs.highway_envs import register_highway_envs
from envs.metaworld_envs import expert_policy, register_metaworld_envs
from envs.registry import EnvSpec, UnknownEnvError, get_env_spec, list_envs, make, register, reward_spec
from envs.state import get_state, set_state, supports_state
from envs.vector import VecEnv, make_vec
from envs.vlm_scenes import register_vlm_scenes
from envs.wrappers import RewardComponentsWrapper

register_gymnasium_envs()
register_carla_envs()
register_highway_envs()
register_metaworld_envs()
register_vlm_scenes()

__all__ = [
    "EnvSpec",
    "RewardComponent",
    "RewardComponentsWrapper",
    "RewardSpec",
    "RewardTerms",
    "UnknownEnvError",
    "VecEnv",
    "combine_components",
    "expert_policy",
    "get_state",
    "get_env_spec",
    "list_envs",
    "make",
    "make_vec",
    "register",
    "reward_spec",
    "set_state",
    "spec_weights_vector",
    "supports_state",
]

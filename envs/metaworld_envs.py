"""Meta-World v3 manipulation tasks: the 50 MT1 tasks by name and the MT10 / MT50 multi-task benchmarks.

Ids: ``metaworld/<task>`` (e.g. ``metaworld/drawer-open-v3``; `TASKS` lists all 50) and ``metaworld/MT10``,
``metaworld/MT50``. `metaworld` is imported only when an env is built, so ``import envs`` stays fast.

- Observations: Meta-World's 39 numbers (hand, gripper, objects, the previous frame of both, goal), with the goal
  observable as in its MT benchmarks. MT ids append a one-hot task id (10 or 50 entries).
- Episodes: 500 steps (``max_episode_steps`` changes both the time limit and Meta-World's own horizon). Episodes
  do not end on success; ``info["success"]`` (bool) says whether this step is a success.
- Goals: each reset draws object and goal positions from the env's own RNG, which ``reset(seed=...)`` (or
  ``make(..., seed=...)``) seeds: the same seed gives the same goals. ``make(..., goal_seed=k)`` fixes them instead:
  every episode of every env made with it starts from the positions a reset with seed k draws (so the training
  VecEnv and the evaluation env share one goal), and Meta-World's dynamics being deterministic, so does the episode.
- Reward: ``reward_function_version`` "v2" (Meta-World's default, shaped, at most 10) or "v1" (the original reward;
  Meta-World+ reports MT10 success of 26% with v1 against 74% with v2, so results must say which). The version is the
  make kwarg of that name; configs set it explicitly so the saved run config records it, and the env reports it as
  ``env.get_wrapper_attr("reward_function_version")``.
- Reward components: Meta-World computes shaping terms in its info (``grasp_reward``, ``in_place_reward``,
  ``obj_to_target``). Only reach, reach-wall, drawer-open and door-unlock combine them linearly (checked against
  Meta-World 3.1.1's ``compute_reward``); their terms carry the weights that reproduce the reward exactly. Every
  other task (all tasks under v1, and all MT ids, whose envs must share one spec) reports the reward itself as
  ``task_reward`` (weight 1) and the shaping terms with weight 0, so they stay available to rankings such as HERON.
  Terms that are constant or duplicate another for a task are left out (MT envs, whose spec is shared, report 0).
- Rendering: headless RGB frames from a named camera (`CAMERAS`, default "corner") or a camera id. Meta-World's
  corner cameras are mounted upside down (their up axis points down in the world), so their frames are rotated 180
  degrees here; the others (and -1, MuJoCo's free camera) are used as they are: every frame is upright and not
  mirrored.
- Simulator state (`envs.get_state`): physics, mocap and the body and site positions Meta-World moves per episode
  (fixtures and goal markers), so a state restored into any env of the same id renders the same frame.
- Experts: `expert_policy(env_id)` wraps Meta-World's scripted policy for the task (obs -> action).

``envs.make_vec("metaworld/MT10", 10, seed=0)`` gives env i task i (i modulo the number of tasks for more envs);
``envs.make("metaworld/MT10", task=3)`` (an index or a task name) is one task of the benchmark.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from envs.components import RewardComponent, RewardSpec, RewardTerms
from envs.registry import get_env_spec, register

TASKS = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3", "button-press-topdown-v3",
    "button-press-topdown-wall-v3", "button-press-v3", "button-press-wall-v3", "coffee-button-v3", "coffee-pull-v3",
    "coffee-push-v3", "dial-turn-v3", "disassemble-v3", "door-close-v3", "door-lock-v3", "door-open-v3",
    "door-unlock-v3", "hand-insert-v3", "drawer-close-v3", "drawer-open-v3", "faucet-open-v3", "faucet-close-v3",
    "hammer-v3", "handle-press-side-v3", "handle-press-v3", "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3",
    "pick-place-wall-v3", "pick-out-of-hole-v3", "pick-place-v3", "plate-slide-v3", "plate-slide-side-v3",
    "plate-slide-back-v3", "plate-slide-back-side-v3", "peg-insert-side-v3", "peg-unplug-side-v3", "soccer-v3",
    "stick-push-v3", "stick-pull-v3", "push-v3", "push-wall-v3", "push-back-v3", "reach-v3", "reach-wall-v3",
    "shelf-place-v3", "sweep-into-v3", "sweep-v3", "window-open-v3", "window-close-v3",
)  # fmt: skip  (Meta-World's own order, which MT50's task ids follow)
MT10_TASKS = (
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
    "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3",
)  # fmt: skip
BENCHMARKS = {"MT10": MT10_TASKS, "MT50": TASKS}
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
DEFAULT_CAMERA = "corner"
EPISODE_STEPS = 500
OBS_SIZE = 39  # Meta-World's observation, before any one-hot task id
REWARD_VERSIONS = ("v2", "v1")

# Tasks whose v2 reward is exactly a weighted sum of info terms (Meta-World 3.1.1 compute_reward).
_LINEAR_V2: dict[str, dict[str, float]] = {
    "reach-v3": {"in_place_reward": 10.0},
    "reach-wall-v3": {"in_place_reward": 10.0},
    "drawer-open-v3": {"grasp_reward": 5.0, "in_place_reward": 5.0},
    "door-unlock-v3": {"grasp_reward": 2.0, "in_place_reward": 8.0},
}
# Info terms that carry nothing for a task: constant (0 or 1) or a copy of obj_to_target.
_UNINFORMATIVE: dict[str, tuple[str, ...]] = {
    "reach-v3": ("grasp_reward",), "reach-wall-v3": ("grasp_reward",), "door-close-v3": ("grasp_reward",),
    "assembly-v3": ("obj_to_target",), "box-close-v3": ("obj_to_target",), "disassemble-v3": ("obj_to_target",),
    "door-open-v3": ("obj_to_target",), "hammer-v3": ("obj_to_target",),
}  # fmt: skip
_TERMS = {
    "grasp_reward": ("maximize", "Meta-World's reach/grasp shaping term in [0, 1]: how well the gripper reaches or "
                                 "holds the task's object (info['grasp_reward'])"),
    "in_place_reward": ("maximize", "Meta-World's in-place shaping term in [0, 1]: 1 when the object (the hand, for "
                                    "reach tasks) is at the goal, decaying with distance (info['in_place_reward'])"),
    "obj_to_target": ("minimize", "distance from the task's object (the hand, for reach tasks) to its goal, m "
                                  "(info['obj_to_target'])"),
}
_GRAB_EFFORT = ("maximize", "the gripper-close command of the action, (a[3] + 1) / 2 in [0, 1] (Meta-World's "
                            "_reward_grab_effort; info['grasp_reward'])")
# Tasks whose info terms mean something else than `_TERMS` says (Meta-World 3.x evaluate_state / compute_reward).
_TASK_TERMS: dict[str, dict[str, tuple[str, str]]] = {
    "door-open-v3": {"grasp_reward": _GRAB_EFFORT},
    "box-close-v3": {"grasp_reward": _GRAB_EFFORT},
    "door-close-v3": {"in_place_reward": (
        "maximize", "Meta-World's hand-in-place term in [0, 1]: 1 when the gripper is at the goal, decaying with "
                    "distance (hand_in_place; info['in_place_reward'])")},
    "lever-pull-v3": {"obj_to_target": (
        "minimize", "scaled distance from the arm's shoulder (the gripper plus an offset) to the lever, not to the "
                    "goal (shoulder_to_lever; info['obj_to_target'])")},
}


def reward_components(task: str, version: str, benchmark: str | None = None) -> RewardSpec:
    """The reward spec of `task` under reward `version`; with a `benchmark` ("MT10", "MT50"), the spec all its tasks
    share (generic descriptions, no linear weights)."""
    subject = task if benchmark is None else f"each env's task of {benchmark}"
    if version == "v1":
        return (RewardComponent("task_reward", 1.0, "maximize", f"Meta-World's v1 (original) reward for {subject}"),)
    per_task = benchmark is None
    weights = _LINEAR_V2.get(task, {}) if per_task else {}
    skipped = _UNINFORMATIVE.get(task, ()) if per_task else ()
    terms = {**_TERMS, **_TASK_TERMS.get(task, {})} if per_task else _TERMS
    spec = [] if weights else [RewardComponent(
        "task_reward", 1.0, "maximize",
        f"Meta-World's v2 reward for {subject} (0 to 10, 10 on success for most tasks); it mixes the shaping terms "
        "reported with it non-linearly, so they carry weight 0")]
    spec += [RewardComponent(name, weights.get(name, 0.0), direction, text)
             for name, (direction, text) in terms.items() if name not in skipped]
    return tuple(spec)


class MetaWorldTask(gym.Wrapper):
    """One Meta-World task made usable: goal observable, goals from the seeded RNG (optionally fixed), upright frames,
    an optional one-hot task id on observations, and a simulator state that includes what Meta-World moves."""

    def __init__(self, env: gym.Env, *, task: str, goal_seed: int | None, camera_id: int,
                 benchmark: str | None = None) -> None:
        """Configure the raw Meta-World env `env` the way Meta-World's goal-observable envs do; with `goal_seed`,
        draw the positions once and freeze them. `camera_id`: the model camera frames come from (-1: free camera).
        `benchmark`: the MT benchmark `task` belongs to (its one-hot task id goes on observations)."""
        super().__init__(env)
        raw = env.unwrapped
        raw._partially_observable = False
        raw.__dict__.pop("sawyer_observation_space", None)  # a cached property: recompute it with the goal's bounds
        raw.observation_space = raw.sawyer_observation_space
        raw._set_task_called = True
        raw._freeze_rand_vec = False
        raw.seeded_rand_vec = True  # draw goals from the env's seeded RNG rather than numpy's global one
        if goal_seed is not None:
            raw.seed(goal_seed)
            raw.reset()
            raw._freeze_rand_vec = True  # later resets reuse the positions just drawn
        self.task_name = task
        self.benchmark = benchmark
        self.camera_id = camera_id
        self._one_hot: np.ndarray | None = None
        if benchmark is not None:
            tasks = BENCHMARKS[benchmark]
            count = len(tasks)
            self._one_hot = np.eye(count)[tasks.index(task)]
            space = raw.observation_space
            self.observation_space = gym.spaces.Box(np.concatenate([space.low, np.zeros(count)]),
                                                    np.concatenate([space.high, np.ones(count)]), dtype=np.float64)

    @property
    def reward_function_version(self) -> str:
        """Meta-World's reward version of this env ("v2" or "v1")."""
        return self.env.unwrapped.reward_function_version

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Reset; a seed reseeds Meta-World's RNG (its own reset ignores the seed argument)."""
        raw = self.env.unwrapped
        if seed is not None:
            raw.seed(seed)
        obs, info = self.env.reset(options=options)
        return self._observation(self._current_first_observation(obs)), info

    def _current_first_observation(self, obs: np.ndarray) -> np.ndarray:
        """Meta-World's `reset_model` moves fixtures (e.g. the drawer) by editing the model without recomputing
        positions, so its first observation (and frame) shows the previous layout. Recompute them and rebuild the
        observation as Meta-World does on reset: the current frame twice, then the goal."""
        import mujoco

        raw = self.env.unwrapped
        mujoco.mj_forward(raw.model, raw.data)
        current = raw._get_curr_obs_combined_no_goal()
        raw._prev_obs = current.copy()
        obs = np.array(obs, dtype=np.float64)
        obs[: 2 * current.size] = np.concatenate([current, current])
        return obs

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step, appending the task id to the observation when there is one."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observation(obs), reward, terminated, truncated, info

    def _observation(self, obs: np.ndarray) -> np.ndarray:
        """Meta-World's observation, plus the one-hot task id for MT envs."""
        return obs if self._one_hot is None else np.concatenate([obs, self._one_hot])

    def render(self) -> np.ndarray | None:
        """The frame, rotated 180 degrees when the camera is mounted upside down (so it is upright, not mirrored)."""
        frame = self.env.render()
        if frame is None:
            return None
        return np.ascontiguousarray(frame[::-1, ::-1] if self.camera_upside_down() else frame)

    def camera_upside_down(self) -> bool:
        """Whether the camera's up axis (the y column of its orientation) points down in the world."""
        if self.camera_id < 0:
            return False
        return bool(self.env.unwrapped.data.cam_xmat[self.camera_id].reshape(3, 3)[2, 1] < 0.0)

    def simulator_state(self) -> np.ndarray:
        """MuJoCo physics and mocap state, then the model's body and site positions (fixtures and goal markers)."""
        import mujoco

        model, data = self.env.unwrapped.model, self.env.unwrapped.data
        spec = _state_spec(mujoco)
        physics = np.empty(mujoco.mj_stateSize(model, spec), dtype=np.float64)
        mujoco.mj_getState(model, data, physics, spec)
        return np.concatenate([physics, model.body_pos.ravel(), model.site_pos.ravel()])

    def restore_simulator_state(self, state: np.ndarray) -> None:
        """Put back a `simulator_state` (of any env of this task), ready to render."""
        import mujoco

        model, data = self.env.unwrapped.model, self.env.unwrapped.data
        spec = _state_spec(mujoco)
        physics = mujoco.mj_stateSize(model, spec)
        bodies = model.body_pos.size
        expected = physics + bodies + model.site_pos.size
        if state.size != expected:
            raise ValueError(f"state has {state.size} values, but {self.task_name} has {expected}")
        mujoco.mj_setState(model, data, state[:physics], spec)
        model.body_pos[:] = state[physics:physics + bodies].reshape(model.body_pos.shape)
        model.site_pos[:] = state[physics + bodies:].reshape(model.site_pos.shape)
        mujoco.mj_forward(model, data)


def _state_spec(mujoco: Any) -> int:
    """MuJoCo state elements saved: physics (qpos, qvel, activations) and the mocap bodies that drive the hand."""
    state = mujoco.mjtState
    return state.mjSTATE_PHYSICS | state.mjSTATE_MOCAP_POS | state.mjSTATE_MOCAP_QUAT


def _build(task: str, *, render_mode: str | None, width: int | None, height: int | None, camera: str | int | None,
           max_episode_steps: int | None, goal_seed: int | None, reward_function_version: str,
           benchmark: str | None = None) -> gym.Env:
    """Build task `task`: the raw env, our `MetaWorldTask` wrapper and the time limit."""
    if reward_function_version not in REWARD_VERSIONS:
        raise ValueError(f"reward_function_version must be one of {REWARD_VERSIONS}; got {reward_function_version!r}")
    camera = DEFAULT_CAMERA if camera is None else camera
    if isinstance(camera, str) and camera not in CAMERAS:
        raise ValueError(f"Meta-World has no camera {camera!r}; cameras: {', '.join(CAMERAS)} (or an id, -1 = free)")
    if not isinstance(camera, str) and not -1 <= int(camera) < len(CAMERAS):
        raise ValueError(f"Meta-World camera ids are -1 (free camera) to {len(CAMERAS) - 1}; got {camera!r}")
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    size = {key: value for key, value in (("width", width), ("height", height)) if value is not None}
    camera_kwargs = {"camera_name": camera} if isinstance(camera, str) else {"camera_id": int(camera)}
    raw = ALL_V3_ENVIRONMENTS[task](render_mode=render_mode, reward_function_version=reward_function_version,
                                    **camera_kwargs, **size)
    steps = EPISODE_STEPS if max_episode_steps is None else max_episode_steps
    raw.max_path_length = steps  # Meta-World truncates (and refuses to step) at its own horizon
    if isinstance(camera, str):
        import mujoco

        camera_id = mujoco.mj_name2id(raw.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    else:
        camera_id = int(camera)
    env = MetaWorldTask(raw, task=task, goal_seed=goal_seed, camera_id=camera_id, benchmark=benchmark)
    return gym.wrappers.TimeLimit(env, steps)


@dataclass(frozen=True)
class MetaWorldConstructor:
    """Builds one Meta-World task (an MT1 id)."""

    task: str

    def __call__(self, *, render_mode: str | None, width: int | None, height: int | None, camera: str | int | None,
                 max_episode_steps: int | None, goal_seed: int | None = None,
                 reward_function_version: str = "v2") -> gym.Env:
        """Build the env; see the module docstring for `goal_seed` and `reward_function_version`."""
        return _build(self.task, render_mode=render_mode, width=width, height=height, camera=camera,
                      max_episode_steps=max_episode_steps, goal_seed=goal_seed,
                      reward_function_version=reward_function_version)


@dataclass(frozen=True)
class MultiTaskConstructor:
    """Builds one task of an MT benchmark, with its one-hot task id appended to observations."""

    benchmark: str

    def __call__(self, *, render_mode: str | None, width: int | None, height: int | None, camera: str | int | None,
                 max_episode_steps: int | None, task: int | str = 0, goal_seed: int | None = None,
                 reward_function_version: str = "v2") -> gym.Env:
        """Build task `task` (index into the benchmark or task name) of the benchmark."""
        tasks = BENCHMARKS[self.benchmark]
        if isinstance(task, str):
            if task not in tasks:
                raise ValueError(f"{task!r} is not a task of {self.benchmark}; its tasks: {', '.join(tasks)}")
            task = tasks.index(task)
        if not 0 <= task < len(tasks):
            raise ValueError(f"{self.benchmark} has tasks 0..{len(tasks) - 1}; got task={task}")
        return _build(tasks[task], render_mode=render_mode, width=width, height=height, camera=camera,
                      max_episode_steps=max_episode_steps, goal_seed=goal_seed,
                      reward_function_version=reward_function_version, benchmark=self.benchmark)


@dataclass(frozen=True)
class TaskCycle:
    """Vector kwargs of MT ids: env i runs task i modulo the number of tasks."""

    num_tasks: int

    def __call__(self, index: int) -> dict[str, Any]:
        """The make kwargs of env `index`."""
        return {"task": index % self.num_tasks}


class MetaWorldTerms(RewardTerms):
    """Reward components read from Meta-World's info (see `reward_components`); success is its info['success']."""

    has_success = True
    per_task = True

    def __init__(self, env: gym.Env) -> None:
        """Build the spec for this env's task (or, for MT envs, its benchmark) and reward version."""
        super().__init__(env)
        task = env.get_wrapper_attr("task_name")
        benchmark = None if self.per_task else env.get_wrapper_attr("benchmark")
        self.spec = reward_components(task, self.unwrapped.reward_function_version, benchmark)
        blank = () if self.per_task else _UNINFORMATIVE.get(task, ())
        self._keys = tuple(None if c.name in blank else "unscaled_reward" if c.name == "task_reward" else c.name
                           for c in self.spec)

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        """The info entries, in spec order (Meta-World's info['unscaled_reward'] is the step's reward); 0 for a
        term that carries nothing for this task (MT envs only)."""
        return [0.0 if key is None else float(info[key]) for key in self._keys]

    def success(self, values: list[float], terminated: bool, info: dict[str, Any]) -> bool:
        """Meta-World's success flag for this step."""
        return bool(info["success"])


class MultiTaskTerms(MetaWorldTerms):
    """The spec every task of an MT benchmark shares (a VecEnv holds them all): task_reward plus weight-0 terms."""

    per_task = False


class ScriptedExpert:
    """Meta-World's scripted policies as obs -> action; a batch [n, d] of observations gives actions [n, 4]."""

    def __init__(self, tasks: tuple[str, ...], one_hot: bool) -> None:
        """Instantiate the expert of each task; with `one_hot`, observations end in the task id that picks one."""
        from metaworld.policies import ENV_POLICY_MAP

        # Meta-World's policies warn about their own gains; the env clips actions to [-1, 1] as intended.
        warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", module="metaworld")
        self.tasks = tasks
        self.one_hot = one_hot
        self._policies = [ENV_POLICY_MAP[task]() for task in tasks]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """The expert's action for one observation or a batch."""
        obs = np.asarray(obs, dtype=np.float64)
        if obs.ndim == 2:
            return np.stack([self(row) for row in obs])
        index = int(np.argmax(obs[OBS_SIZE:])) if self.one_hot else 0
        return np.asarray(self._policies[index].get_action(obs[:OBS_SIZE]), dtype=np.float32)


def expert_policy(env_id: str) -> Callable[[np.ndarray], np.ndarray]:
    """The scripted expert of a Meta-World id (Meta-World's shipped policies), e.g. to record demonstrations."""
    constructor = get_env_spec(env_id).constructor
    if isinstance(constructor, MetaWorldConstructor):
        return ScriptedExpert((constructor.task,), one_hot=False)
    if isinstance(constructor, MultiTaskConstructor):
        return ScriptedExpert(BENCHMARKS[constructor.benchmark], one_hot=True)
    raise ValueError(f"no scripted expert for {env_id!r}: experts exist for the metaworld/* ids")


def register_metaworld_envs() -> None:
    """Register the 50 MT1 tasks and the MT10 / MT50 benchmarks (idempotent)."""
    for task in TASKS:
        register(f"metaworld/{task}", MetaWorldConstructor(task), MetaWorldTerms, family="metaworld", overwrite=True,
                 description=f"Meta-World v3 task {task}: Sawyer arm, 500-step episodes, success in info; reward "
                             "version v2 unless made with reward_function_version='v1'")
    for name, tasks in BENCHMARKS.items():
        register(f"metaworld/{name}", MultiTaskConstructor(name), MultiTaskTerms, family="metaworld", overwrite=True,
                 vector_kwargs=TaskCycle(len(tasks)),
                 description=f"Meta-World {name}: {len(tasks)} tasks with one-hot task ids; make_vec env i runs task "
                             f"i mod {len(tasks)}, make(..., task=k) one task; reward version v2 unless "
                             "reward_function_version='v1'")

"""Meta-World: registration, exact reward components, success, seeded goals, state restore, upright frames, the MT10
vector env, the scripted experts and gymnasium's env checker."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import metaworld_envs as mw

GOAL = slice(-3, None)  # the goal position ends Meta-World's observation


def goal_of(env: envs.RewardComponentsWrapper, seed: int | None = None) -> np.ndarray:
    """The goal position after a reset (with `seed` if given)."""
    return env.reset(seed=seed)[0][GOAL].copy()


def wood(frame: np.ndarray) -> np.ndarray:
    """Mask of the table's wood-brown pixels."""
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return (r > g + 15) & (g > b + 10) & (g > 50)


def test_all_tasks_and_benchmarks_are_registered_without_importing_metaworld():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS, MT10_V3

    assert mw.TASKS == tuple(ALL_V3_ENVIRONMENTS) and mw.MT10_TASKS == tuple(MT10_V3)
    expected = {f"metaworld/{task}" for task in mw.TASKS} | {"metaworld/MT10", "metaworld/MT50"}
    assert set(envs.list_envs("metaworld")) == expected
    code = "import sys, envs; envs.get_env_spec('metaworld/reach-v3'); assert 'metaworld' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("typo", "meant"), [("metaworld/drawer-open-v2", "metaworld/drawer-open-v3"),
                                             ("drawer-open-v3", "metaworld/drawer-open-v3"),
                                             ("metaworld/mt10", "metaworld/MT10")])
def test_unknown_ids_suggest_close_matches(typo, meant):
    with pytest.raises(envs.UnknownEnvError, match=meant):
        envs.make(typo)


@pytest.mark.parametrize(("env_id", "kwargs", "error", "message"), [
    ("metaworld/reach-v3", {"camera": "front"}, ValueError, "corner2"),
    ("metaworld/reach-v3", {"camera": 7}, ValueError, "-1"),
    ("metaworld/reach-v3", {"reward_function_version": "v3"}, ValueError, "reward_function_version"),
    ("metaworld/reach-v3", {"task": 1}, TypeError, "task"),
    ("metaworld/MT10", {"task": "sweep-v3"}, ValueError, "reach-v3, push-v3"),
    ("metaworld/MT10", {"task": 10}, ValueError, "0..9"),
])
def test_bad_kwargs_and_cameras_fail_clearly(env_id, kwargs, error, message):
    with pytest.raises(error, match=message):
        envs.make(env_id, **kwargs)


def test_specs_decompose_linear_rewards_and_expose_the_rest_as_task_reward():
    weights = {name: {c.name: c.weight for c in envs.reward_spec(f"metaworld/{name}")}
               for name in ("reach-v3", "drawer-open-v3", "door-unlock-v3", "pick-place-v3", "door-open-v3")}
    assert weights["reach-v3"] == {"in_place_reward": 10.0, "obj_to_target": 0.0}
    assert weights["drawer-open-v3"] == {"grasp_reward": 5.0, "in_place_reward": 5.0, "obj_to_target": 0.0}
    assert weights["door-unlock-v3"] == {"grasp_reward": 2.0, "in_place_reward": 8.0, "obj_to_target": 0.0}
    assert weights["pick-place-v3"] == {"task_reward": 1.0, "grasp_reward": 0.0, "in_place_reward": 0.0,
                                        "obj_to_target": 0.0}
    assert weights["door-open-v3"] == {"task_reward": 1.0, "grasp_reward": 0.0, "in_place_reward": 0.0}
    v1 = envs.reward_spec("metaworld/reach-v3", reward_function_version="v1")
    assert [(c.name, c.weight) for c in v1] == [("task_reward", 1.0)] and "v1" in v1[0].description
    mt10 = [c.name for c in envs.reward_spec("metaworld/MT10", task="drawer-open-v3")]
    assert mt10 == ["task_reward", "grasp_reward", "in_place_reward", "obj_to_target"]


@pytest.mark.parametrize(("task", "term", "direction", "words"), [
    ("door-open-v3", "grasp_reward", "maximize", "gripper-close command"),
    ("box-close-v3", "grasp_reward", "maximize", "gripper-close command"),
    ("door-close-v3", "in_place_reward", "maximize", "hand_in_place"),
    ("lever-pull-v3", "obj_to_target", "minimize", "shoulder_to_lever"),
])
def test_task_specific_terms_say_what_meta_world_computes(task, term, direction, words):
    component = {c.name: c for c in mw.reward_components(task, "v2")}[term]
    assert component.direction == direction and words in component.description
    shared = {c.name: c for c in mw.reward_components(task, "v2", benchmark="MT50")}[term]
    assert words not in shared.description  # the MT spec is shared by all tasks: generic descriptions


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_mt_task_reward_description_names_the_benchmark_not_env_0s_task(version):
    description = envs.reward_spec("metaworld/MT10", reward_function_version=version)[0].description
    assert "MT10" in description and "reach-v3" not in description


@pytest.mark.parametrize("env_id", ["metaworld/reach-v3", "metaworld/drawer-open-v3", "metaworld/door-unlock-v3",
                                    "metaworld/pick-place-v3", "metaworld/soccer-v3"])
def test_components_reproduce_the_reward_along_expert_episodes(env_id):
    """Expert episodes reach the success states where most v2 rewards switch to their flat 10."""
    env = envs.make(env_id, render_mode=None, max_episode_steps=150)
    expert = envs.expert_policy(env_id)
    weights = envs.spec_weights_vector(env.reward_spec)
    obs, _ = env.reset(seed=0)
    rewards, successes, done = [], [], False
    while not done:
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        values = np.fromiter(info["reward_components"].values(), dtype=np.float64)
        assert values @ weights == pytest.approx(reward, rel=1e-12, abs=1e-12)
        assert type(info["success"]) is bool and not terminated
        rewards.append(reward)
        successes.append(info["success"])
        done = truncated
    assert len(rewards) == 150 and not successes[0]
    if env_id != "metaworld/soccer-v3":  # its expert often misses within 150 steps; the equality is what matters
        assert any(successes) and max(rewards) > 8.0
    env.close()


def test_seeds_pick_goals_and_goal_seed_fixes_them():
    env = envs.make("metaworld/reach-v3", render_mode=None)
    first = goal_of(env, seed=1)
    np.testing.assert_array_equal(goal_of(env, seed=1), first)
    assert not np.array_equal(goal_of(env, seed=2), first)
    assert not np.array_equal(goal_of(env), goal_of(env))  # a new goal every episode
    fixed = [envs.make("metaworld/reach-v3", render_mode=None, goal_seed=1, seed=seed) for seed in (0, 5)]
    starts = [fixed[0].reset()[0], fixed[1].reset()[0], fixed[0].reset()[0], fixed[1].reset(seed=9)[0]]
    for start in starts:  # the same start (hand, object, goal) in every env and episode, whatever the reset seed
        np.testing.assert_array_equal(start, starts[0])
    np.testing.assert_array_equal(starts[0][GOAL], first)  # the positions a reset with seed 1 draws
    for each in (env, *fixed):
        each.close()


@pytest.mark.parametrize("task", ["drawer-open-v3", "window-open-v3", "faucet-open-v3", "push-v3"])
def test_the_first_observation_shows_this_episodes_layout(task):
    """Meta-World moves fixtures on reset without recomputing positions; the first observation must already show
    where they are: a step with the arm held still (mocap unchanged, gripper open) keeps the object where the
    reset observation put it, and the previous-frame half equals the current one."""
    env = envs.make(f"metaworld/{task}", render_mode=None)
    for seed in range(4):  # random layouts: each reset moves the fixtures somewhere new
        obs, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(obs[:18], obs[18:36])
        after, *_ = env.step(np.array([0.0, 0.0, 0.0, -1.0]))
        np.testing.assert_allclose(after[4:7], obs[4:7], atol=2e-3)
    env.close()


def test_state_round_trip_renders_the_same_frame_in_another_env():
    """drawer-open moves the drawer (a model body) and the goal marker (a site) per episode: both are in the state."""
    source = envs.make("metaworld/drawer-open-v3", width=64, height=64, record_state=True, seed=0)
    target = envs.make("metaworld/drawer-open-v3", width=64, height=64, seed=7)
    expert = envs.expert_policy("metaworld/drawer-open-v3")
    obs, _ = source.reset()
    target.reset()
    for _ in range(30):
        obs, _, _, _, info = source.step(expert(obs))
    state = info["state"]
    before = target.render()
    envs.set_state(source, state)
    envs.set_state(target, state)
    np.testing.assert_array_equal(envs.get_state(target), state)
    frame = target.render()
    np.testing.assert_array_equal(frame, source.render())
    assert not np.array_equal(frame, before)
    with pytest.raises(ValueError, match="values"):
        envs.set_state(target, state[:-1])
    source.close()
    target.close()


@pytest.mark.parametrize("camera", ["corner", "corner2", "behindGripper", None])
def test_named_cameras_render_the_right_way_up(camera):
    env = envs.make("metaworld/pick-place-v3", camera=camera, width=96, height=96, seed=0)
    env.reset()
    frame = env.render()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8 and frame.flags["C_CONTIGUOUS"]
    table = wood(frame)
    assert table[48:].mean() > 0.2 > 10 * table[:48].mean()  # the table fills the lower half, not the upper
    env.close()


@pytest.mark.parametrize("camera", [c for c in mw.CAMERAS if c != "topview"])  # topview looks straight down
def test_cameras_are_upright_and_not_mirrored(camera):
    """A green marker put up and to the right of the camera's view (in world terms) shows in the frame's upper right."""
    import mujoco

    env = envs.make("metaworld/pick-place-v3", camera=camera, width=96, height=96, seed=0)
    env.reset()
    model, data = env.unwrapped.model, env.unwrapped.data
    camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    view = -data.cam_xmat[camera_id].reshape(3, 3)[:, 2]
    right = np.cross(view, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, view)
    marker = model.site("goal").id  # a site on the world body: its position is in world coordinates
    model.site_pos[marker] = data.cam_xpos[camera_id] + 0.25 * view + 0.06 * (right + up)
    model.site_rgba[marker], model.site_size[marker] = (0.0, 1.0, 0.0, 1.0), 0.02
    mujoco.mj_forward(model, data)
    frame = env.render().astype(int)
    rows, cols = np.nonzero((frame[..., 1] > 150) & (frame[..., 0] < 80) & (frame[..., 2] < 80))
    assert len(rows) > 20, "the marker should be visible"
    assert rows.mean() < 48 < cols.mean()
    env.close()


def test_mt10_vector_env_holds_every_task_with_one_hot_ids():
    vec = envs.make_vec("metaworld/MT10", 10, seed=0, render_mode=None, max_episode_steps=4)
    expert = envs.expert_policy("metaworld/MT10")
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (10, 49) == (vec.num_envs, *vec.single_observation_space.shape)
    np.testing.assert_array_equal(obs[:, 39:], np.eye(10))
    weights = envs.spec_weights_vector(vec.reward_spec)
    reach, door_open = mw.MT10_TASKS.index("reach-v3"), mw.MT10_TASKS.index("door-open-v3")
    for step in range(1, 6):
        obs, rewards, terminated, truncated, info = vec.step(expert(obs))
        assert set(info) == {"next_obs", "reward_components", "success", "episode_return", "episode_length"}
        assert info["reward_components"].shape == (10, 4) and info["success"].dtype == bool
        np.testing.assert_allclose(info["reward_components"] @ weights, rewards, rtol=1e-12)
        np.testing.assert_array_equal(info["next_obs"][:, 39:], np.eye(10))
        assert info["reward_components"][reach, 1] == info["reward_components"][door_open, 3] == 0.0  # uninformative
        assert not terminated.any() and truncated.all() == (step == 4)
    assert (info["episode_length"] == 0).all()
    vec.close()


def test_async_mt_vector_env_cycles_tasks_in_workers():
    vec = envs.make_vec("metaworld/MT10", 3, seed=0, vectorization="async", render_mode=None)
    try:
        obs, _ = vec.reset(seed=0)
        assert obs[:, 39:].argmax(axis=1).tolist() == [0, 1, 2]
    finally:
        vec.close()


@pytest.mark.parametrize("task", ["reach-v3", "drawer-open-v3"])
def test_scripted_experts_succeed(task):
    env = envs.make(f"metaworld/{task}", render_mode=None)
    expert = envs.expert_policy(f"metaworld/{task}")
    start, successes = time.perf_counter(), []
    for episode in range(10):
        obs, _ = env.reset(seed=episode)
        for _ in range(mw.EPISODE_STEPS):
            obs, _, _, _, info = env.step(expert(obs))
            if info["success"]:
                break
        successes.append(info["success"])
    assert np.mean(successes) >= 0.9
    assert time.perf_counter() - start < 30.0
    env.close()


def test_expert_policy_rejects_other_families():
    with pytest.raises(ValueError, match="metaworld"):
        envs.expert_policy("Pendulum-v1")


def test_gymnasium_env_checker_passes_on_the_wrapped_env():
    env = envs.make("metaworld/drawer-open-v3", width=32, height=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # advice such as "unbounded Box" or "wrapped env" is not a failure
        check_env(env)
    env.close()

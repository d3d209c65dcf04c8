"""`robotrl reward queries`: query pairs cut from a run's buffer, from rollouts of its policy, or from a dataset,
stored with the simulator states that let people see them as video."""

from __future__ import annotations

import numpy as np

import envs
from reward_learning.label_store import LabelStore
from robotrl.cli import main
from robotrl.offline_queries import buffer_from_dataset
from robotrl.spaces import ActionAdapter

PREFERENCE = {"source": "preference", "preference": {
    "budget": 8, "queries_per_round": 8, "segment_length": 10, "query_every": 100, "unsup_steps": 50,
    "candidate_factor": 2, "diagnostic_pairs": 0, "reset_updates": 2, "model": {"hidden_sizes": [8], "max_epochs": 2}}}


def assert_states_match_observations(store: LabelStore, query: int) -> None:
    """Each stored state, put back into a Pendulum, gives the stored next observation."""
    env = envs.make("Pendulum-v1")
    env.reset(seed=0)
    for segment in store.query_segments([query])[0]:
        info = store.segment_info(segment)
        states, stored = store.segment_states(segment), store.segments([segment]).next_obs[0].numpy()
        assert len(states) == info.length - info.absorbing  # states of the real steps; absorbing ones repeat the last
        for state, next_obs in zip(states, stored[:len(states)], strict=True):
            envs.set_state(env, state)
            theta, speed = env.unwrapped.state
            np.testing.assert_allclose([np.cos(theta), np.sin(theta), speed], next_obs, atol=1e-4)


def test_queries_from_a_run_that_recorded_states(run_tiny_training, tmp_path, capsys):
    reward = {**PREFERENCE, "preference": {**PREFERENCE["preference"], "record_states": True}}
    run = run_tiny_training(tmp_path / "with-states", reward=reward)
    db = tmp_path / "offline.sqlite"
    assert main(["reward", "queries", str(run), "--out", str(db), "--count", "6", "--segment-length", "10",
                 "--task", "upright"]) == 0
    assert "added 6 queries" in capsys.readouterr().out
    with LabelStore.open(db) as store:
        assert store.counts()["pending"] == 6 and store.meta["task_description"] == "upright"
        assert_states_match_observations(store, store.pending_queries()[0])


def test_a_run_without_states_needs_rollouts_of_its_policy(run_tiny_training, tmp_path, capsys):
    run = run_tiny_training(tmp_path / "plain")
    db = tmp_path / "offline.sqlite"
    assert main(["reward", "queries", str(run), "--out", str(db)]) != 0
    assert "did not record simulator states" in capsys.readouterr().err and not db.exists()
    assert main(["reward", "queries", str(run), "--out", str(db), "--rollouts", "2", "--count", "4",
                 "--segment-length", "20"]) == 0
    with LabelStore.open(db) as store:
        assert store.counts()["queries"] == 4
        assert {store.segment_info(s).run for s in store.query_segments(store.pending_queries())[0]} \
            == {"plain-rollouts-s0"}, "not the training run's name: its episodes are numbered from 0 too"
        assert_states_match_observations(store, 1)
    again = ["reward", "queries", str(run), "--out", str(db), "--rollouts", "1", "--count", "2",
             "--segment-length", "20"]
    assert main(again) != 0
    assert "already holds rollouts" in capsys.readouterr().err
    assert main([*again, "--seed", "1"]) == 0
    with LabelStore.open(db) as store:
        assert store.counts()["queries"] == 6 and store.max_episode("plain-rollouts-s1") == 0


def random_dataset(path, steps: int = 120, with_states: bool = True):
    """Random-action Pendulum steps in D4RL layout, episodes cut at 40 steps by timeouts."""
    env = envs.make("Pendulum-v1", record_state=True, seed=0)
    obs, _ = env.reset()
    rows = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts", "states")}
    for t in range(steps):
        action = env.action_space.sample()
        next_obs, reward, _, _, info = env.step(action)
        for key, value in zip(rows, (obs, action, reward, False, (t + 1) % 40 == 0, info["state"]), strict=True):
            rows[key].append(value)
        obs = env.reset()[0] if (t + 1) % 40 == 0 else next_obs
    if not with_states:
        del rows["states"]
    np.savez(path, **{k: np.asarray(v) for k, v in rows.items()})
    return {k: np.asarray(v) for k, v in rows.items()}


def test_queries_from_an_offline_dataset(tmp_path, capsys):
    data = random_dataset(tmp_path / "pendulum.npz")
    db = tmp_path / "offline.sqlite"
    assert main(["reward", "queries", str(tmp_path / "pendulum.npz"), "--out", str(db)]) != 0
    assert "needs --env" in capsys.readouterr().err
    # 39-step segments: whole episodes (40 rows) but their last step, whose next observation is unknown
    assert main(["reward", "queries", str(tmp_path / "pendulum.npz"), "--env", "Pendulum-v1", "--out", str(db),
                 "--count", "5", "--segment-length", "39"]) == 0
    with LabelStore.open(db) as store:
        for query in store.pending_queries():
            assert_states_match_observations(store, query)
            for side in store.query_segments([query])[0]:
                assert store.segment_info(side)[3:5] == (0, 39)  # (start, length): never across an episode boundary
        segment = store.segment_info(store.query_segments([query])[0][0])
        stored = store.segments([segment.id])
    first = segment.episode * 40 + segment.start
    env_actions = data["actions"][first:first + segment.length]
    adapter = ActionAdapter.from_space(envs.make("Pendulum-v1").action_space)
    np.testing.assert_allclose(adapter.to_env(stored.action[0].numpy()), env_actions, atol=1e-5)  # agent units

    random_dataset(tmp_path / "no_states.npz", with_states=False)
    assert main(["reward", "queries", str(tmp_path / "no_states.npz"), "--env", "Pendulum-v1", "--out", str(db)]) != 0
    assert "simulator states are needed" in capsys.readouterr().err


def test_a_dataset_without_next_observations_drops_each_episodes_last_step(tmp_path):
    data = random_dataset(tmp_path / "pendulum.npz")
    terminals = data["terminals"].copy()
    terminals[59] = True  # the second episode terminates after 20 steps: episodes of 40, 20, 20 and 40 rows
    np.savez(tmp_path / "terminal.npz", **{**data, "terminals": terminals})
    buffer = buffer_from_dataset(tmp_path / "terminal.npz", "Pendulum-v1")
    rows = np.concatenate([np.arange(0, 39), np.arange(40, 59), np.arange(60, 79), np.arange(80, 119)])
    stored = buffer.storage
    assert len(buffer) == len(rows)
    np.testing.assert_array_equal(stored["obs"].numpy(), data["observations"][rows])
    np.testing.assert_array_equal(stored["next_obs"].numpy(), data["observations"][rows + 1])
    assert stored["episode_id"].tolist() == [0] * 39 + [1] * 19 + [2] * 19 + [3] * 39
    ends = np.flatnonzero(stored["truncated"].numpy())
    assert ends.tolist() == [38, 57, 76, 115] and not stored["terminated"].any()

    np.savez(tmp_path / "with_next.npz", **data, next_observations=data["observations"] + 1)
    kept = buffer_from_dataset(tmp_path / "with_next.npz", "Pendulum-v1")
    assert len(kept) == 120 and kept.storage["truncated"].sum() == 3

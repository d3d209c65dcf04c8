"""ReplayBuffer (ring, relabelling, state round trip) and RolloutBuffer (GAE)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robotrl.core.buffers import ReplayBuffer, RolloutBuffer


def add_indexed(buffer: ReplayBuffer, start: int, stop: int, chunk: int = 3) -> None:
    """Add transitions start..stop-1 whose every field encodes the transition index i."""
    for lo in range(start, stop, chunk):
        idx = np.arange(lo, min(lo + chunk, stop), dtype=np.float32)
        n = len(idx)
        buffer.add(
            obs=np.stack([idx, -idx], 1),
            action=(idx / 1000.0)[:, None],
            next_obs=np.stack([idx + 1, -idx - 1], 1),
            reward=np.zeros(n, dtype=np.float32),
            env_reward=idx * 10,
            components=np.stack([idx, idx * idx], 1),
            terminated=(idx % 7 == 0).astype(np.float32),
            truncated=idx % 5 == 0,
            episode_step=idx.astype(np.int64) % 11,
        )


def make_buffer(capacity: int = 10) -> ReplayBuffer:
    return ReplayBuffer(capacity, (2,), 1, num_components=2)


def test_add_and_sample_shapes():
    buffer = make_buffer(capacity=50)
    add_indexed(buffer, 0, 20)
    assert len(buffer) == 20 and buffer.pos == 20 and buffer.total_added == 20
    batch = buffer.sample(7, generator=torch.Generator().manual_seed(0))
    assert batch.obs.shape == (7, 2) and batch.next_obs.shape == (7, 2)
    assert batch.action.shape == (7, 1)
    assert batch.reward.shape == (7,) and batch.terminated.shape == (7,)
    assert batch.obs.dtype == torch.float32 and batch.terminated.dtype == torch.float32
    # rows stay consistent: next_obs = obs + (1, -1), action = index / 1000, only filled rows are sampled
    big = buffer.sample(500, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(big.next_obs, big.obs + torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(big.action[:, 0], big.obs[:, 0] / 1000.0)
    assert big.obs[:, 0].max() <= 19 and len(torch.unique(big.obs[:, 0])) == 20
    torch.testing.assert_close(big.terminated, (big.obs[:, 0] % 7 == 0).float())


def test_sample_from_empty_buffer_raises():
    with pytest.raises(RuntimeError, match="empty"):
        make_buffer().sample(4)


def test_ring_wrap_keeps_newest_capacity_transitions():
    buffer = make_buffer(capacity=10)
    add_indexed(buffer, 0, 25)  # 2.5x capacity, in chunks of 3 that straddle the wrap point
    assert len(buffer) == 10 and buffer.total_added == 25 and buffer.pos == 25 % 10
    stored = sorted(buffer.storage["obs"][:, 0].tolist())
    assert stored == list(range(15, 25))
    # every row is still a consistent transition after the wrap
    s = buffer.storage
    torch.testing.assert_close(s["env_reward"], s["obs"][:, 0] * 10)
    torch.testing.assert_close(s["components"][:, 1], s["obs"][:, 0] ** 2)
    assert torch.equal(s["truncated"], s["obs"][:, 0] % 5 == 0)


def test_chronological_indices_after_wrap():
    buffer = make_buffer(capacity=10)
    add_indexed(buffer, 0, 6)
    assert buffer.storage["obs"][buffer.chronological_indices(), 0].tolist() == list(range(6))
    add_indexed(buffer, 6, 23)
    order = buffer.chronological_indices()
    assert buffer.storage["obs"][order, 0].tolist() == list(range(13, 23))


def test_relabel_rewrites_every_reward_after_wrap():
    """B-Pref relabelled only up to the write pointer after the ring wrapped; every stored row must change."""
    buffer = make_buffer(capacity=10)
    add_indexed(buffer, 0, 25)
    assert 0 < buffer.pos < buffer.capacity  # wrapped, write pointer in the middle
    seen_keys = []

    def reward_fn(chunk):
        seen_keys.append(set(chunk))
        return 3.0 * chunk["components"][:, 0] - chunk["components"][:, 1] + 0.5 * chunk["episode_step"]

    buffer.relabel(reward_fn, chunk_size=4)  # chunks that do not divide the capacity
    index = buffer.storage["obs"][:, 0]
    expected = 3.0 * index - index**2 + 0.5 * (index.long() % 11)
    torch.testing.assert_close(buffer.storage["reward"], expected)
    assert {"obs", "action", "next_obs", "env_reward", "components", "terminated", "truncated",
            "episode_step"} <= seen_keys[0]
    assert "reward" not in seen_keys[0]
    # the untouched fields are intact
    torch.testing.assert_close(buffer.storage["env_reward"], index * 10)


def test_relabel_before_wrap_leaves_empty_slots_alone():
    buffer = make_buffer(capacity=10)
    add_indexed(buffer, 0, 4)
    buffer.relabel(lambda chunk: chunk["env_reward"] + 1.0)
    assert buffer.storage["reward"][:4].tolist() == [1.0, 11.0, 21.0, 31.0]
    assert buffer.storage["reward"][4:].abs().sum() == 0


def test_relabel_rejects_nan_and_wrong_length():
    buffer = make_buffer(capacity=10)
    add_indexed(buffer, 0, 12)
    before = buffer.storage["reward"].clone()
    with pytest.raises(FloatingPointError, match="NaN"):
        buffer.relabel(lambda chunk: torch.full((len(chunk["obs"]),), float("nan")))
    with pytest.raises(FloatingPointError):
        buffer.relabel(lambda chunk: torch.full((len(chunk["obs"]),), float("inf")))
    with pytest.raises(ValueError, match="returned 3 rewards for 10"):
        buffer.relabel(lambda chunk: torch.zeros(3))
    assert torch.equal(buffer.storage["reward"], before)


def test_state_dict_round_trip_restores_storage_and_ring_pointer():
    buffer = make_buffer(capacity=10)
    add_indexed(buffer, 0, 17)
    state = buffer.state_dict()
    restored = make_buffer(capacity=10)
    restored.load_state_dict(state)
    assert (restored.pos, restored.size, restored.total_added) == (buffer.pos, buffer.size, buffer.total_added)
    for key in buffer.storage:
        assert torch.equal(restored.storage[key], buffer.storage[key]), key
    # both continue identically: the next writes land on the same (oldest) slots
    add_indexed(buffer, 17, 21)
    add_indexed(restored, 17, 21)
    for key in buffer.storage:
        assert torch.equal(restored.storage[key], buffer.storage[key]), key
    assert torch.equal(restored.chronological_indices(), buffer.chronological_indices())
    with pytest.raises(ValueError, match="capacity"):
        make_buffer(capacity=11).load_state_dict(state)


def test_state_dict_of_partly_filled_buffer():
    buffer = make_buffer(capacity=10)
    add_indexed(buffer, 0, 4)
    state = buffer.state_dict()
    assert state["storage"]["obs"].shape == (4, 2)
    restored = make_buffer(capacity=10)
    restored.load_state_dict(state)
    assert len(restored) == 4 and restored.pos == 4
    assert torch.equal(restored.storage["obs"], buffer.storage["obs"])


def test_gae_hand_computed_with_done_in_the_middle():
    gamma, lam = 0.9, 0.8
    rollout = RolloutBuffer(3, 1, (1,), 1, "cpu")
    rewards, values, dones = [1.0, 2.0, 3.0], [0.5, 0.4, 0.3], [0.0, 1.0, 0.0]
    for t in range(3):
        rollout.add(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.tensor([values[t]]),
                    torch.tensor([rewards[t]]), torch.tensor([dones[t]]))
    assert rollout.full
    rollout.compute_gae(torch.tensor([0.7]), gamma, lam)
    # t=2: bootstraps from the value after the rollout
    a2 = 3.0 + gamma * 0.7 - 0.3
    # t=1: the episode ended here, so no bootstrap and no advantage flows back from t=2
    a1 = 2.0 - 0.4
    # t=0: bootstraps from V(s_1) and accumulates the advantage of t=1
    a0 = (1.0 + gamma * 0.4 - 0.5) + gamma * lam * a1
    torch.testing.assert_close(rollout.advantages[:, 0], torch.tensor([a0, a1, a2]))
    torch.testing.assert_close(rollout.returns[:, 0], torch.tensor([a0 + 0.5, a1 + 0.4, a2 + 0.3]))


def test_gae_lambda_one_gives_discounted_returns_per_env():
    gamma = 0.5
    rollout = RolloutBuffer(4, 2, (1,), 1, "cpu")
    rewards = torch.tensor([[1.0, 1.0], [2.0, 0.0], [3.0, 1.0], [4.0, 2.0]])
    dones = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    for t in range(4):
        rollout.add(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2), rewards[t], dones[t])
    rollout.compute_gae(torch.tensor([8.0, 0.0]), gamma, 1.0)
    env0 = [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4 + 0.0625 * 8, 2 + 0.5 * 3 + 0.25 * 4 + 0.125 * 8,
            3 + 0.5 * 4 + 0.25 * 8, 4 + 0.5 * 8]
    env1 = [1 + 0.5 * 0, 0.0, 1 + 0.5 * 2, 2.0]
    torch.testing.assert_close(rollout.returns, torch.tensor([env0, env1]).T)
    flat = rollout.flat()
    assert flat["returns"].shape == (8,) and flat["obs"].shape == (8, 1)


def add_episodes(buffer: ReplayBuffer, lengths_per_env: list[list[int]], terminal: bool) -> None:
    """Interleave `len(lengths_per_env)` envs (one row per env per vector step, as the trainer adds them).

    Env e runs episodes of the given lengths back to back; obs[0] = global step of that env, obs[1] = env index;
    each episode ends terminated (`terminal`) or truncated."""
    n = len(lengths_per_env)
    ends = [np.cumsum(lengths) for lengths in lengths_per_env]
    steps = min(int(e[-1]) for e in ends)
    ids: dict[tuple[int, int], int] = {}
    for t in range(steps):
        episode_id, episode_step, term, trunc = [], [], [], []
        for e in range(n):
            k = int(np.searchsorted(ends[e], t, side="right"))
            episode_id.append(ids.setdefault((e, k), len(ids)))
            start = 0 if k == 0 else int(ends[e][k - 1])
            episode_step.append(t - start)
            last = t == int(ends[e][k]) - 1
            term.append(float(last and terminal))
            trunc.append(last and not terminal)
        obs = np.array([[t, e] for e in range(n)], dtype=np.float32)
        buffer.add(obs=obs, action=np.zeros((n, 1), np.float32), next_obs=obs + 0.5, reward=np.zeros(n, np.float32),
                   terminated=np.array(term, np.float32), truncated=np.array(trunc),
                   episode_step=np.array(episode_step), episode_id=np.array(episode_id))


def check_windows(buffer: ReplayBuffer, index: torch.Tensor, absorbing: torch.Tensor) -> None:
    """Real steps of a window are consecutive steps of one env's one episode; absorbing ones repeat a terminal step."""
    s = buffer.storage
    for row, mask in zip(index, absorbing, strict=True):
        real = row[~mask]
        assert len(real) >= 1 and bool((mask == (torch.arange(len(mask)) >= len(real))).all())  # absorbing = suffix
        assert len(set(s["episode_id"][real].tolist())) == 1
        assert len(set(s["obs"][real, 1].tolist())) == 1  # one env
        assert torch.equal(s["obs"][real, 0], s["obs"][real[0], 0] + torch.arange(len(real)))  # consecutive
        if mask.any():
            assert s["terminated"][real[-1]] == 1 and bool((row[mask] == real[-1]).all())


def test_segment_windows_stay_inside_episodes_of_interleaved_envs():
    buffer = ReplayBuffer(10_000, (2,), 1, device="cpu")
    add_episodes(buffer, [[30, 25, 40, 30], [20, 45, 30, 30]], terminal=False)  # time limits: no absorbing steps
    index, absorbing = buffer.segment_indices(10, 200, stride=2, generator=torch.Generator().manual_seed(0))
    assert index.shape == (200, 10) and not absorbing.any()
    check_windows(buffer, index, absorbing)


def test_segment_windows_may_run_past_terminations_only():
    buffer = ReplayBuffer(10_000, (2,), 1, device="cpu")
    add_episodes(buffer, [[8, 12, 9, 15, 7, 10], [11, 6, 14, 9, 8, 12]], terminal=True)
    index, absorbing = buffer.segment_indices(10, 300, stride=2, generator=torch.Generator().manual_seed(1))
    assert absorbing.any() and (~absorbing).all(1).any()
    check_windows(buffer, index, absorbing)
    with pytest.raises(ValueError, match="segment_length"):  # truncated episodes shorter than the window
        short = ReplayBuffer(1000, (2,), 1, device="cpu")
        add_episodes(short, [[5, 5, 5, 5]], terminal=False)
        short.segment_indices(10, 5, generator=torch.Generator().manual_seed(0))


def test_segment_windows_after_the_ring_wraps_never_cross_the_write_position():
    buffer = ReplayBuffer(97, (2,), 1, device="cpu")  # wraps several times, mid-episode
    add_episodes(buffer, [[40] * 10], terminal=False)
    assert buffer.total_added > buffer.capacity
    index, absorbing = buffer.segment_indices(12, 300, generator=torch.Generator().manual_seed(2))
    check_windows(buffer, index, absorbing)  # consecutive global steps => never spans oldest and newest rows
    recent_index, _ = buffer.segment_indices(12, 50, generator=torch.Generator().manual_seed(3), recent=30)
    newest = buffer.storage["obs"][: len(buffer), 0].max()
    assert bool((buffer.storage["obs"][recent_index[:, 0], 0] > newest - 30).all())


def n_step_reference(rows: list[dict], start: int, n: int, gamma: float, stride: int) -> tuple[float, float, int]:
    """(return, discount, row of the bootstrap) for the n-step return from chronological row `start`, by hand."""
    total, row, steps = 0.0, start, 0
    while True:
        total += gamma**steps * rows[row]["reward"]
        steps += 1
        ended = rows[row]["terminated"] or rows[row]["truncated"]
        nxt = row + stride
        if steps == n or ended or nxt >= len(rows) or rows[nxt]["episode"] != rows[start]["episode"]:
            return total, gamma**steps, row
        row = nxt


@pytest.mark.parametrize("capacity", [64, 37])  # 37 < rows added: the ring wraps mid-episode
def test_n_step_returns_match_a_hand_computation_with_two_envs(capacity):
    rng = np.random.default_rng(0)
    stride, gamma, n = 2, 0.9, 3
    buffer = ReplayBuffer(capacity, (1,), 1, num_components=1)
    rows, episode, next_episode = [], [0, 1], 2
    for _ in range(30):  # 30 vector steps of 2 envs = 60 rows, interleaved env 0, env 1
        terminated = rng.random(stride) < 0.1
        truncated = ~terminated & (rng.random(stride) < 0.1)
        reward = rng.normal(size=stride).astype(np.float32)
        for e in range(stride):
            rows.append({"reward": float(reward[e]), "terminated": bool(terminated[e]),
                         "truncated": bool(truncated[e]), "episode": episode[e], "id": len(rows)})
        buffer.add(obs=np.array([[r["id"]] for r in rows[-stride:]], np.float32), action=np.zeros((stride, 1)),
                   next_obs=np.array([[r["id"] + 0.5] for r in rows[-stride:]], np.float32), reward=reward,
                   components=2 * reward[:, None], terminated=terminated.astype(np.float32), truncated=truncated,
                   episode_id=np.array(episode))
        for e in range(stride):
            if terminated[e] or truncated[e]:
                episode[e], next_episode = next_episode, next_episode + 1
    stored = rows[-buffer.size:]
    batch = buffer.sample(400, generator=torch.Generator().manual_seed(1), n_step=n, gamma=gamma, stride=stride)
    assert batch.discount is not None and batch.components is not None
    checked_short = 0
    for i in range(400):
        start = next(j for j, r in enumerate(stored) if r["id"] == int(batch.obs[i, 0]))
        total, discount, last = n_step_reference(stored, start, n, gamma, stride)
        assert batch.reward[i].item() == pytest.approx(total, abs=1e-5)
        assert batch.components[i, 0].item() == pytest.approx(2 * total, abs=1e-5)
        assert batch.discount[i].item() == pytest.approx(discount)
        assert batch.next_obs[i, 0].item() == stored[last]["id"] + 0.5
        assert batch.terminated[i].item() == float(stored[last]["terminated"])
        checked_short += discount > gamma**n
    assert 0 < checked_short < 400  # both full and cut-short returns were exercised


def test_one_step_sampling_carries_components_and_no_discount():
    buffer = make_buffer()
    add_indexed(buffer, 0, 6)
    batch = buffer.sample(20, generator=torch.Generator().manual_seed(0))
    assert batch.discount is None
    assert torch.equal(batch.components[:, 0], batch.obs[:, 0])
    with pytest.raises(ValueError, match="n_step"):
        buffer.sample(4, n_step=0)

"""Reward ensembles: shapes, per-member evaluation, mean/std/conservative outputs, input variants, discrete actions,
normalisation, the CNN encoder's channel-first contract, save/load, and the `LearnedReward` source."""

from __future__ import annotations

import pydantic
import pytest
import torch

from reward_learning.models import LearnedReward, RewardEnsemble, RewardModelConfig, check_pixel_shape
from reward_learning.sources import RewardSource

OBS_DIM, ACT_DIM = 4, 2


def config(**kwargs) -> RewardModelConfig:
    return RewardModelConfig(**{"ensemble_size": 3, "hidden_sizes": [32, 32], **kwargs})


def model(obs_shape=(OBS_DIM,), action_dim=ACT_DIM, discrete=False, seed=0, offset=None, **kwargs) -> RewardEnsemble:
    """A small ensemble; `offset` sets the per-member absorbing-state logits (0 at init, learned in training)."""
    torch.manual_seed(seed)
    m = RewardEnsemble(obs_shape, action_dim, config(**kwargs), discrete_actions=discrete)
    if offset is not None:
        with torch.no_grad():
            m.absorbing_logit.copy_(torch.as_tensor(offset, dtype=torch.float32))
    return m


def by_hand(m: RewardEnsemble, x: torch.Tensor) -> torch.Tensor:
    """Member rewards computed from the network directly: squash(net(x)) - squash(absorbing logit)."""
    squash = torch.tanh if m.config.output == "tanh" else (lambda v: v)
    return squash(m.net(x)).squeeze(-1) - squash(m.absorbing_logit)[:, None]


def batch(lead=(16,), obs_shape=(OBS_DIM,), action_dim=ACT_DIM, seed=0, scale=1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"obs": scale * torch.randn(*lead, *obs_shape, generator=g),
            "action": torch.rand(*lead, action_dim, generator=g) * 2 - 1,
            "next_obs": scale * torch.randn(*lead, *obs_shape, generator=g),
            "env_reward": torch.randn(*lead, generator=g)}


# ------------------------------------------------------------------------------------------------------ config
def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(pydantic.ValidationError, match="hidden_size"):
        RewardModelConfig(hidden_size=[32])
    with pytest.raises(pydantic.ValidationError):
        RewardModelConfig(label_margin=0.5)
    with pytest.raises(pydantic.ValidationError):
        RewardModelConfig(inputs="action")
    with pytest.raises(pydantic.ValidationError):
        RewardModelConfig(ensemble_size=0)


# ------------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("lead", [(16,), (5, 7)])
def test_output_shapes(lead):
    m = model()
    b = batch(lead)
    assert m.member_rewards(b).shape == (3, *lead)
    assert m(b).shape == lead
    mean, std = m.mean_std(b)
    assert mean.shape == lead and std.shape == lead


def test_members_differ_and_forward_is_their_mean():
    m = model()
    b = batch()
    members = m.member_rewards(b)
    assert not torch.allclose(members[0], members[1])
    torch.testing.assert_close(m(b), members.mean(0))


@pytest.mark.parametrize("lead", [(6,), (4, 5)])
def test_per_member_equals_each_member_on_its_own_slice(lead):
    m = model()
    members = [batch(lead, seed=s) for s in range(3)]
    per = {k: torch.stack([b[k] for b in members]) for k in ("obs", "action", "next_obs")}
    out = m.member_rewards(per, per_member=True)
    assert out.shape == (3, *lead)
    for e in range(3):
        alone = m.member_rewards({k: v[e] for k, v in per.items()})[e]
        torch.testing.assert_close(out[e], alone)
    # and it is not just member 0 (or the shared-input path) applied everywhere
    assert not torch.allclose(out[1], m.member_rewards({k: v[1] for k, v in per.items()})[0])


def test_conservative_output_is_mean_minus_k_std():
    m = model(conservative_k=0.7)
    b = batch((32,))
    mean, std = m.mean_std(b)
    members = m.member_rewards(b)
    torch.testing.assert_close(std, members.std(0))
    assert (std > 0).all()
    torch.testing.assert_close(m(b), mean - 0.7 * std)
    plain = model(conservative_k=0.0)
    torch.testing.assert_close(plain(b), plain.mean_std(b)[0])


def test_single_member_std_is_zero_and_conservative_is_mean():
    m = model(ensemble_size=1, conservative_k=2.0)
    b = batch()
    mean, std = m.mean_std(b)
    assert (std == 0).all()
    torch.testing.assert_close(m(b), mean)


def test_tanh_output_is_bounded_and_linear_is_not():
    big = batch((256,), scale=1000.0)
    tanh = model(output="tanh")
    r = tanh.member_rewards(big)
    assert r.abs().max() <= 1.0
    assert r.abs().max() > 0.99  # saturated, so the bound is what held it
    linear = model(output="linear")
    assert linear.member_rewards(big).abs().max() > 10.0
    # same weights (same seed): tanh output is exactly tanh of the linear output
    torch.testing.assert_close(tanh.member_rewards(batch()), torch.tanh(linear.member_rewards(batch())))


def test_rewards_are_relative_to_the_absorbing_state():
    """Member i reports squash(net_i) - squash(absorbing_logit_i): an absorbing state is worth exactly 0."""
    offset = torch.tensor([0.5, -1.0, 2.0])
    b = batch((32,))
    x = torch.cat([b["obs"], b["action"]], -1)
    for output in ("tanh", "linear"):
        m = model(output=output, offset=offset)
        members = m.member_rewards(b)
        torch.testing.assert_close(members, by_hand(m, x))
        shifted = members - model(output=output).member_rewards(b)  # same net weights, zero offset
        squash = torch.tanh if output == "tanh" else (lambda v: v)
        torch.testing.assert_close(shifted, -squash(offset)[:, None].expand_as(shifted))
    # per-member evaluation subtracts each member's own offset too
    m = model(offset=offset)
    per = {k: v.expand(3, *v.shape) for k, v in b.items()}
    torch.testing.assert_close(m.member_rewards(per, per_member=True), m.member_rewards(b))
    # tanh: each member's rewards span at most the width 2 of tanh, shifted by its offset
    big = model(offset=offset).member_rewards(batch((256,), scale=1000.0))
    lower, upper = -1 - torch.tanh(offset), 1 - torch.tanh(offset)
    assert ((big >= lower[:, None] - 1e-6) & (big <= upper[:, None] + 1e-6)).all()


# ------------------------------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize("inputs,fields", [
    ("obs_action", {"obs", "action"}), ("obs_action_next_obs", {"obs", "action", "next_obs"}), ("obs", {"obs"}),
    ("next_obs", {"next_obs"}), ("obs_next_obs", {"obs", "next_obs"}),
])
def test_inputs_use_exactly_the_configured_fields(inputs, fields):
    m = model(inputs=inputs)
    assert m.needs == frozenset(fields)
    b = batch()
    base = m(b)
    for name in ("obs", "action", "next_obs"):
        changed = dict(b)
        changed[name] = b[name] + 0.5 * torch.randn_like(b[name])
        moved = not torch.allclose(m(changed), base)
        assert moved == (name in fields), f"changing {name} moved={moved} with inputs={inputs}"
    # fields it does not need can be absent altogether
    torch.testing.assert_close(m({k: b[k] for k in fields}), base)


def test_discrete_actions_are_one_hot():
    m = model(action_dim=3, discrete=True, offset=[0.3, -0.8, 1.5])
    obs = torch.randn(8, OBS_DIM, generator=torch.Generator().manual_seed(1))
    rewards = [m({"obs": obs, "action": torch.full((8, 1), a)}) for a in range(3)]
    assert rewards[0].shape == (8,)
    assert not torch.allclose(rewards[0], rewards[1]) and not torch.allclose(rewards[1], rewards[2])
    # index a is the one-hot vector e_a fed to the network
    action = torch.tensor([[0], [2], [1], [2], [0], [1], [1], [0]])
    x = torch.cat([obs, torch.nn.functional.one_hot(action[:, 0], 3).float()], -1)
    expected = by_hand(m, x).mean(0)
    torch.testing.assert_close(m({"obs": obs, "action": action}), expected)
    # float-coded indices (as stored in float buffers) work too, and [q, L, 1] segment-shaped indices
    torch.testing.assert_close(m({"obs": obs, "action": action.float()}), expected)
    seg = m({"obs": obs.reshape(2, 4, OBS_DIM), "action": action.reshape(2, 4, 1)})
    torch.testing.assert_close(seg, expected.reshape(2, 4))


def test_continuous_action_features_are_raw_values():
    m = model(offset=[0.3, -0.8, 1.5])
    b = batch()
    x = torch.cat([b["obs"], b["action"]], -1)
    torch.testing.assert_close(m(b), by_hand(m, x).mean(0))


# ------------------------------------------------------------------------------------------------ normalisation
def test_fit_input_stats_standardises_and_freezes():
    m = model(normalize_inputs=True)
    b = batch((512,), seed=3)
    b = {**b, "obs": b["obs"] * torch.tensor([1.0, 10.0, 0.1, 3.0]) + torch.tensor([5.0, -2.0, 0.0, 100.0])}
    assert not bool(m.inputs_fitted)
    m.fit_input_stats(b)
    assert bool(m.inputs_fitted)
    x = m._features(b, 1)
    torch.testing.assert_close(x.mean(0), torch.zeros(OBS_DIM + ACT_DIM), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(OBS_DIM + ACT_DIM), atol=1e-4, rtol=0)
    # the model sees standardised features
    torch.testing.assert_close(m(b), by_hand(m, x).mean(0))
    # frozen after the first fit
    mean, std = m.in_mean.clone(), m.in_std.clone()
    m.fit_input_stats(batch((512,), seed=4, scale=7.0))
    torch.testing.assert_close(m.in_mean, mean)
    torch.testing.assert_close(m.in_std, std)


def test_fit_input_stats_is_a_no_op_without_normalize_inputs():
    m = model(normalize_inputs=False)
    b = batch(scale=5.0)
    before = m(b)
    m.fit_input_stats(b)
    assert not bool(m.inputs_fitted)
    assert (m.in_mean == 0).all() and (m.in_std == 1).all()
    torch.testing.assert_close(m(b), before)


def test_feature_constant_in_fitting_batch_does_not_explode():
    m = model(normalize_inputs=True)
    b = batch((256,))
    b["obs"][:, 0] = 0.0  # e.g. a contact flag never set during the first (random) steps
    m.fit_input_stats(b)
    later = batch((8,), seed=1)
    later["obs"][:, 0] = 1.0
    assert m._features(later, 1).abs().max() < 1e3


def test_fit_output_stats_scales_the_reward_to_unit_std():
    m = model(normalize_output=True, conservative_k=0.5)
    b = batch((400,), seed=5)
    raw = m(b).detach()
    m.fit_output_stats(b)
    out = m(b).detach()
    assert abs(float(out.std()) - 1.0) < 1e-4
    torch.testing.assert_close(out, raw / raw.std())  # scaled, never shifted
    # refitted on other data: stats change (refit after each round, unlike the input stats)
    m.fit_output_stats(batch((400,), seed=6, scale=3.0))
    assert not torch.allclose(m(b), out)


def test_output_normalisation_keeps_the_sign_relative_to_termination():
    m = model(normalize_output=True, offset=[-2.0, -2.0, -2.0])  # every state beats the absorbing state
    b = batch((200,))
    assert (m(b) > 0).all()
    m.fit_output_stats(b)
    assert (m(b) > 0).all()


def test_fit_output_stats_no_op_without_normalize_output():
    m = model(normalize_output=False)
    b = batch((64,))
    before = m(b)
    m.fit_output_stats(b)
    torch.testing.assert_close(m(b), before)
    assert float(m.out_std) == 1.0


# -------------------------------------------------------------------------------------------------- save/load
def test_save_load_round_trip_mlp(tmp_path):
    m = model(action_dim=3, discrete=True, normalize_inputs=True, normalize_output=True, conservative_k=0.3,
              inputs="obs_action_next_obs", offset=[0.2, -0.4, 0.9])
    b = batch((64,), action_dim=1)
    b["action"] = torch.randint(0, 3, (64, 1), generator=torch.Generator().manual_seed(0))
    m.fit_input_stats(b)
    m.fit_output_stats(b)
    path = tmp_path / "sub" / "reward.pt"
    m.save(path)
    assert path.exists() and not path.with_name("reward.pt.tmp").exists()
    loaded = RewardEnsemble.load(path)
    assert loaded.config == m.config and loaded.discrete_actions and loaded.action_dim == 3
    assert bool(loaded.inputs_fitted)
    torch.testing.assert_close(loaded.absorbing_logit, m.absorbing_logit)
    torch.testing.assert_close(loaded(b), m(b), rtol=0, atol=0)
    torch.testing.assert_close(loaded.member_rewards(b), m.member_rewards(b), rtol=0, atol=0)


def test_save_load_round_trip_regret_keeps_potential(tmp_path):
    m = model(preference_model="regret")
    m.save(tmp_path / "r.pt")
    loaded = RewardEnsemble.load(tmp_path / "r.pt")
    obs = batch()["obs"]
    torch.testing.assert_close(loaded.potentials(obs), m.potentials(obs), rtol=0, atol=0)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no reward model"):
        RewardEnsemble.load(tmp_path / "absent.pt")


def test_load_other_torch_file_raises_value_error(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a robotrl reward model"):
        RewardEnsemble.load(tmp_path / "other.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a robotrl reward model"):
        RewardEnsemble.load(tmp_path / "list.pt")


def test_load_model_saved_before_the_absorbing_offset(tmp_path):
    m = model()
    m.save(tmp_path / "new.pt")
    data = torch.load(tmp_path / "new.pt", weights_only=False)
    del data["state_dict"]["absorbing_logit"]  # what RewardEnsemble.save wrote before the offset existed
    torch.save(data, tmp_path / "old.pt")
    b = batch()
    try:
        loaded = RewardEnsemble.load(tmp_path / "old.pt")
    except ValueError:
        return
    torch.testing.assert_close(loaded(b), m(b))


@pytest.mark.parametrize("content", [b"this is a yaml file, not a model\n", b""])
def test_load_non_torch_file_raises_value_error(tmp_path, content):
    path = tmp_path / "not_a_model.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a robotrl reward model"):
        RewardEnsemble.load(path)


# --------------------------------------------------------------------------------------------------------- CNN
def pixels(n: int, shape=(3, 32, 32), seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_cnn_channel_first_uint8_matches_float():
    m = model(obs_shape=(3, 32, 32), encoder="cnn", ensemble_size=2, hidden_sizes=[32], inputs="obs")
    frames = pixels(4)
    r_uint8 = m({"obs": frames})
    assert r_uint8.shape == (4,)
    torch.testing.assert_close(r_uint8, m({"obs": frames.float() / 255.0}))
    # [q, L] leading shape
    assert m({"obs": frames.reshape(2, 2, 3, 32, 32)}).shape == (2, 2)
    torch.testing.assert_close(m({"obs": frames.reshape(2, 2, 3, 32, 32)}).flatten(), r_uint8)
    # different frames, different rewards
    assert not torch.allclose(r_uint8[0], r_uint8[1])


@pytest.mark.parametrize("shape", [(32, 32, 3), (64, 64, 1), (84, 84, 4)])
def test_cnn_rejects_channel_last(shape):
    with pytest.raises(ValueError, match="channel-first"):
        model(obs_shape=shape, encoder="cnn", ensemble_size=1, hidden_sizes=[8])


def test_check_pixel_shape_accepts_channel_first():
    for shape in [(3, 32, 32), (1, 84, 84), (4, 64, 64)]:
        check_pixel_shape(shape)


def test_cnn_rejects_vector_obs_and_regret_and_input_normalisation():
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        model(obs_shape=(8,), encoder="cnn")
    with pytest.raises(ValueError, match="regret"):
        model(obs_shape=(3, 16, 16), encoder="cnn", preference_model="regret", ensemble_size=1)
    with pytest.raises(ValueError, match="normalize_inputs"):
        model(obs_shape=(3, 16, 16), encoder="cnn", normalize_inputs=True, ensemble_size=1)


def test_mlp_rejects_image_obs():
    with pytest.raises(ValueError, match="cnn"):
        model(obs_shape=(3, 16, 16))


def test_cnn_per_member_and_actions(tmp_path):
    m = model(obs_shape=(3, 16, 16), encoder="cnn", ensemble_size=2, hidden_sizes=[16], action_dim=3, discrete=True,
              inputs="obs_action_next_obs", offset=[0.4, -0.7])
    obs, nxt = pixels(2 * 3 * 2, (3, 16, 16), 1), pixels(2 * 3 * 2, (3, 16, 16), 2)
    action = torch.randint(0, 3, (12, 1), generator=torch.Generator().manual_seed(3))
    per = {"obs": obs.reshape(2, 3, 2, 3, 16, 16), "next_obs": nxt.reshape(2, 3, 2, 3, 16, 16),
           "action": action.reshape(2, 3, 2, 1)}
    out = m.member_rewards(per, per_member=True)
    assert out.shape == (2, 3, 2)
    for e in range(2):
        torch.testing.assert_close(out[e], m.member_rewards({k: v[e] for k, v in per.items()})[e])
    # action index changes the reward
    flat = {"obs": obs[:4], "next_obs": nxt[:4]}
    assert not torch.allclose(m({**flat, "action": torch.zeros(4, 1)}), m({**flat, "action": torch.ones(4, 1)}))
    # save/load round trip
    m.save(tmp_path / "cnn.pt")
    loaded = RewardEnsemble.load(tmp_path / "cnn.pt")
    assert loaded.config.encoder == "cnn"
    batch_ = {**flat, "action": action[:4]}
    torch.testing.assert_close(loaded(batch_), m(batch_), rtol=0, atol=0)


# -------------------------------------------------------------------------------------------------- LearnedReward
def test_learned_reward_source():
    m = model(inputs="obs_next_obs")
    source = LearnedReward(m)
    assert isinstance(source, RewardSource)
    assert source.needs == frozenset(m.fields) == frozenset({"obs", "next_obs"})
    b = batch((10,))
    b["components"] = torch.zeros(10, 2)
    r = source(b)
    assert r.shape == (10,) and r.dtype == torch.float32
    assert not r.requires_grad
    torch.testing.assert_close(r, m(b).detach())
    description = source.describe()
    assert description["name"] == "learned" and description["model"]["inputs"] == "obs_next_obs"

"""Segments (batches of trajectory slices) and preference labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward_learning.segments import Label, Segments, right_preferred_target


def make_segments(q: int = 4, length: int = 6, obs_dim: int = 3, action_dim: int = 2, k: int = 2,
                  episode0: int = 0) -> Segments:
    """Segments whose values encode (query, step) so slicing mistakes are visible: obs[i, t, :] = 100 i + t."""
    base = 100.0 * torch.arange(q)[:, None] + torch.arange(length)[None, :]  # [q, L]
    return Segments(
        obs=base[..., None].expand(q, length, obs_dim).clone(),
        action=(base[..., None] + 0.5).expand(q, length, action_dim).clone(),
        next_obs=(base[..., None] + 1.0).expand(q, length, obs_dim).clone(),
        env_reward=base.clone() * 2,
        components=(base[..., None] * torch.tensor([1.0, -1.0] * (k // 2) + [3.0] * (k % 2))).clone(),
        episode=torch.arange(episode0, episode0 + q, dtype=torch.int64),
        start=torch.arange(q, dtype=torch.int64) * 10,
    )


# ----------------------------------------------------------------------------------------------------- Label
@pytest.mark.parametrize("text,expected", [("left", Label.LEFT), ("RIGHT", Label.RIGHT), ("  Equal ", Label.EQUAL),
                                           ("skip", Label.SKIP)])
def test_label_parse_names(text, expected):
    assert Label.parse(text) is expected


@pytest.mark.parametrize("code", [0, 1, 2, 3, np.int64(1), np.int32(2)])
def test_label_parse_codes(code):
    assert Label.parse(code) == int(code)
    assert isinstance(Label.parse(code), Label)


@pytest.mark.parametrize("bad", ["up", "", "lefty", 4, -1, True, 1.0, None])
def test_label_parse_rejects_with_allowed_values(bad):
    with pytest.raises(ValueError) as err:
        Label.parse(bad)
    message = str(err.value)
    for name in ("left", "right", "equal", "skip"):
        assert name in message


def test_right_preferred_target_maps_codes():
    target = right_preferred_target(np.array([0, 1, 2, 1, 0]))
    assert target.dtype == torch.float32
    torch.testing.assert_close(target, torch.tensor([0.0, 1.0, 0.5, 1.0, 0.0]))
    torch.testing.assert_close(right_preferred_target(torch.tensor([Label.EQUAL])), torch.tensor([0.5]))


@pytest.mark.parametrize("bad", [[0, 3], [1, 4], [-1, 0]])
def test_right_preferred_target_rejects_skip_and_invalid(bad):
    with pytest.raises(ValueError, match="filter"):
        right_preferred_target(np.array(bad))


# -------------------------------------------------------------------------------------------------- Segments
def test_segments_shape_and_length():
    s = make_segments(q=4, length=6)
    assert len(s) == 4 and s.length == 6


@pytest.mark.parametrize("field,shape", [("action", (4, 5, 2)), ("next_obs", (3, 6, 3)), ("env_reward", (4, 7)),
                                         ("components", (4,)), ("episode", (5,)), ("start", (3,))])
def test_segments_reject_mismatched_shapes(field, shape):
    s = make_segments(q=4, length=6)
    values = {name: getattr(s, name) for name in ("obs", "action", "next_obs", "env_reward", "components",
                                                  "episode", "start")}
    values[field] = torch.zeros(shape)
    with pytest.raises(ValueError, match=field):
        Segments(**values)


def test_segments_indexing_by_slice_array_list_and_mask():
    s = make_segments(q=5, length=4)
    by_slice = s[1:3]
    assert len(by_slice) == 2 and by_slice.episode.tolist() == [1, 2]
    torch.testing.assert_close(by_slice.obs, s.obs[1:3])
    by_array = s[np.array([4, 0])]
    assert by_array.episode.tolist() == [4, 0] and by_array.start.tolist() == [40, 0]
    torch.testing.assert_close(by_array.env_reward, s.env_reward[[4, 0]])
    by_list = s[[2, 2]]
    assert by_list.episode.tolist() == [2, 2]
    mask = np.array([True, False, True, False, True])
    by_mask = s[mask]
    assert by_mask.episode.tolist() == [0, 2, 4]
    torch.testing.assert_close(by_mask.components, s.components[torch.as_tensor(mask)])
    by_tensor_mask = s[torch.as_tensor(mask)]
    torch.testing.assert_close(by_tensor_mask.next_obs, by_mask.next_obs)


def test_crop_shared_offset():
    s = make_segments(q=3, length=8)
    c = s.crop(2, 5)
    assert len(c) == 3 and c.length == 5
    torch.testing.assert_close(c.obs, s.obs[:, 2:7])
    torch.testing.assert_close(c.env_reward, s.env_reward[:, 2:7])
    assert c.start.tolist() == [2, 12, 22]
    assert c.episode.tolist() == s.episode.tolist()


def test_crop_per_segment_offsets():
    s = make_segments(q=3, length=8)
    offsets = torch.tensor([0, 3, 1])
    c = s.crop(offsets, 4)
    for i, o in enumerate(offsets.tolist()):
        torch.testing.assert_close(c.obs[i], s.obs[i, o:o + 4])
        torch.testing.assert_close(c.action[i], s.action[i, o:o + 4])
        torch.testing.assert_close(c.next_obs[i], s.next_obs[i, o:o + 4])
        torch.testing.assert_close(c.components[i], s.components[i, o:o + 4])
    assert c.start.tolist() == [0, 13, 21]
    # the cropped obs values say where they came from: 100 i + (offset + t)
    assert c.obs[1, :, 0].tolist() == [103.0, 104.0, 105.0, 106.0]


@pytest.mark.parametrize("offset,length", [(0, 9), (5, 4), (torch.tensor([0, 5, 0]), 4), (-1, 2),
                                           (torch.tensor([0, -1, 0]), 2)])
def test_crop_out_of_range_raises(offset, length):
    with pytest.raises(ValueError, match="crop"):
        make_segments(q=3, length=8).crop(offset, length)


def test_transitions_flatten_and_episode_step():
    s = make_segments(q=2, length=3, obs_dim=3, action_dim=2, k=2)
    t = s.transitions()
    assert {"obs", "action", "next_obs", "env_reward", "components", "episode_step"} <= set(t)
    assert t["obs"].shape == (6, 3) and t["action"].shape == (6, 2) and t["env_reward"].shape == (6,)
    assert t["components"].shape == (6, 2)
    assert t["obs"][:, 0].tolist() == [0.0, 1.0, 2.0, 100.0, 101.0, 102.0]
    assert t["episode_step"].tolist() == [0, 1, 2, 10, 11, 12]
    assert t["episode_step"].dtype == torch.int64


def test_concat():
    a, b = make_segments(q=2, length=5), make_segments(q=3, length=5, episode0=10)
    c = Segments.concat([a, b])
    assert len(c) == 5 and c.length == 5
    assert c.episode.tolist() == [0, 1, 10, 11, 12]
    torch.testing.assert_close(c.obs[2:], b.obs)
    torch.testing.assert_close(c.start[:2], a.start)
    with pytest.raises(ValueError, match="nothing"):
        Segments.concat([])
    with pytest.raises((ValueError, RuntimeError)):
        Segments.concat([a, make_segments(q=2, length=4)])


def test_to_device_keeps_values():
    s = make_segments()
    moved = s.to("cpu")
    torch.testing.assert_close(moved.obs, s.obs)
    assert moved.episode.dtype == torch.int64


def test_absorbing_defaults_to_false_and_follows_crop_and_flatten():
    s = make_segments(q=2, length=5)
    assert s.absorbing.shape == (2, 5) and s.absorbing.dtype == torch.bool and not s.absorbing.any()
    absorbing = torch.tensor([[False, False, False, True, True], [False] * 5])
    s = Segments(**{**{n: getattr(s, n) for n in ("obs", "action", "next_obs", "env_reward", "components",
                                                  "episode", "start")}, "absorbing": absorbing})
    assert s.crop(torch.tensor([2, 0]), 3).absorbing.tolist() == [[False, True, True], [False, False, False]]
    assert s.transitions()["absorbing"].tolist() == absorbing.flatten().tolist()
    assert s[[1, 0]].absorbing.tolist() == [absorbing[1].tolist(), absorbing[0].tolist()]
    with pytest.raises(ValueError, match="absorbing"):
        Segments(**{**{n: getattr(s, n) for n in ("obs", "action", "next_obs", "env_reward", "components",
                                                    "episode", "start")}, "absorbing": torch.zeros(2, 4)})

"""Running mean/std statistics and per-env return scaling."""

from __future__ import annotations

import numpy as np
import torch

from robotrl.core.normalizers import ReturnScaler, RunningMeanStd


def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=[1.0, -3.0, 10.0], scale=[0.5, 2.0, 4.0], size=(n, 3)) for n in (1, 7, 32, 100, 3)]
    rms = RunningMeanStd((3,))
    for batch in batches:
        rms.update(torch.as_tensor(batch, dtype=torch.float32))
    data = np.concatenate(batches).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-4)
    assert abs(float(rms.count) - len(data)) < 1e-3
    normalized = rms.normalize(torch.as_tensor(data, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(normalized.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalized.std(0), 1.0, atol=1e-4)


def test_running_mean_std_normalize_clips():
    rms = RunningMeanStd((), clip=2.0)
    rms.update(torch.tensor([0.0, 1.0, -1.0, 0.5, -0.5]))
    out = rms.normalize(torch.tensor([100.0, -100.0, 0.0]))
    assert out.tolist()[:2] == [2.0, -2.0] and abs(out[2].item()) < 1e-6


def test_running_mean_std_state_is_in_state_dict():
    rms = RunningMeanStd((2,))
    rms.update(torch.randn(10, 2) + 5)
    copy = RunningMeanStd((2,))
    copy.load_state_dict(rms.state_dict())
    assert torch.equal(copy.mean, rms.mean) and torch.equal(copy.var, rms.var) and torch.equal(copy.count, rms.count)


def test_return_scaler_resets_returns_on_done():
    gamma = 0.9
    scaler = ReturnScaler(num_envs=2, gamma=gamma)
    scaler(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]))
    assert scaler.returns.tolist() == [1.0, 0.0]  # env 1 ended: its return starts again
    scaled = scaler(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(scaler.returns, torch.tensor([1.0 + gamma, 2.0], dtype=torch.float64))
    # the running stats saw the discounted returns before each reset: [1, 1] then [1.9, 2]
    seen = np.array([1.0, 1.0, 1.0 + gamma, 2.0])
    np.testing.assert_allclose(scaler.stats.var.item(), seen.var(), rtol=1e-3)
    std = np.sqrt(seen.var())
    np.testing.assert_allclose(scaled.numpy(), np.array([1.0, 2.0]) / std, rtol=1e-3)
    scaler(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert scaler.returns.tolist() == [0.0, 0.0]

"""The success classifier on VLM embeddings: fits labelled frames, generalises to held-out ones, saves/loads onto the
same model only, and reads labelled frames with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward_learning.vlm_success import SuccessClassifier, fit_logistic, load_labelled_frames

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory):
    from reward_learning.vlm import load_transformers_backend
    from reward_learning.vlm_tiny import build_tiny_clip

    path = build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", prompts=["a red square"])
    return load_transformers_backend(path, device="cpu")


def square_frames(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy grey frames; the successful half has a bright red square somewhere in its upper half."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(60, 120, (count, 32, 32, 3)).astype(np.uint8)
    success = np.arange(count) % 2 == 0
    for i in np.flatnonzero(success):
        row, col = rng.integers(0, 8), rng.integers(0, 20)
        frames[i, row:row + 12, col:col + 12] = (255, 20, 20)
    return frames, success


def test_logistic_fit_separates_separable_data():
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] - 0.5 * x[:, 3] > 0).float()
    weight, bias = fit_logistic(x, y, l2=1e-4, steps=200)
    assert ((x @ weight + bias > 0).float() == y).float().mean() > 0.97


def test_success_head_learns_from_few_frames_and_generalises(tiny_backend, tmp_path):
    frames, success = square_frames(60, seed=0)
    classifier, fit = SuccessClassifier.fit(tiny_backend, frames, success, holdout=0.25, seed=0)
    assert fit.train_frames == 45 and fit.holdout_frames == 15
    assert fit.train_accuracy >= 0.95 and fit.holdout_accuracy >= 0.8
    fresh, labels = square_frames(40, seed=1)  # frames it never saw
    probabilities = classifier.score_frames(fresh)
    assert ((probabilities > 0.5).numpy() == labels).mean() >= 0.8
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    loaded = SuccessClassifier.load(classifier.save(tmp_path / "head.pt"), tiny_backend)
    assert torch.allclose(loaded.score_frames(fresh), probabilities)


def test_a_head_refuses_another_model(tiny_backend, tmp_path):
    state = {"weight": torch.zeros(7), "bias": 0.0, "backend": tiny_backend.name, "dim": 7}
    torch.save(state, tmp_path / "head.pt")
    with pytest.raises(ValueError, match="fit it again on this model"):
        SuccessClassifier.load(tmp_path / "head.pt", tiny_backend)
    with pytest.raises(FileNotFoundError, match="robotrl reward success-head"):
        SuccessClassifier.load(tmp_path / "missing.pt", tiny_backend)


def test_labelled_frames_are_checked(tmp_path):
    frames, success = square_frames(6, seed=0)
    good = tmp_path / "good.npz"
    np.savez(good, frames=frames, success=success)
    assert load_labelled_frames(good)[1].tolist() == success.tolist()
    cases = {"no_labels": {"frames": frames}, "one_class": {"frames": frames, "success": np.ones(6)},
             "floats": {"frames": frames.astype(np.float32), "success": success},
             "short": {"frames": frames, "success": success[:3]}}
    messages = {"no_labels": "missing \\['success'\\]", "one_class": "both successful and unsuccessful",
                "floats": "must be uint8", "short": "one 0/1 label per frame"}
    for name, arrays in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(ValueError, match=messages[name]):
            load_labelled_frames(tmp_path / f"{name}.npz")

"""A success classifier on a vision-language model's image embeddings, fitted from a few labelled frames.

RoboFuME (Yang et al. 2024) fine-tunes a VLM into a success detector from a handful of labelled images and uses its
success probability as the reward. Here the VLM stays frozen and a logistic head on its unit image embeddings is
fitted (L2-regularised, classes weighted to balance): a few dozen frames are enough for a linear probe, it trains in
a second on a CPU, and it needs no prompt. The reward of a frame is P(success | frame) in [0, 1].

Labelled frames come as an `.npz` with `frames` (uint8 [N, H, W, 3]) and `success` ([N], 0/1). A fitted head is
saved with the embedding width and the backend it was fitted on, and refuses to load onto another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reward_learning.vlm import FrameReward, Frames, VLMBackend, embed_frames


@dataclass
class SuccessFit:
    """How a fit went: accuracies on the training frames and on the held-out ones (nan without a holdout)."""

    train_accuracy: float
    holdout_accuracy: float
    train_frames: int
    holdout_frames: int


def load_labelled_frames(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 [N, H, W, 3], success bool [N]) from an `.npz`; clear errors for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no labelled frames at {path}")
    with np.load(path) as data:
        missing = {"frames", "success"} - set(data.files)
        if missing:
            raise ValueError(f"{path} needs arrays 'frames' (uint8 [N, H, W, 3]) and 'success' ([N] 0/1); missing "
                             f"{sorted(missing)}")
        frames, success = data["frames"], data["success"]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    if success.shape != (len(frames),) or not np.isin(success, (0, 1)).all():
        raise ValueError(f"{path}: success must hold one 0/1 label per frame")
    success = success.astype(bool)
    if success.all() or not success.any():
        raise ValueError(f"{path}: needs both successful and unsuccessful frames to learn the difference")
    return frames, success


class SuccessClassifier(FrameReward):
    """P(success | frame) from a logistic head on frozen VLM image embeddings."""

    name = "vlm_success"

    def __init__(self, backend: VLMBackend, weight: torch.Tensor, bias: float, batch_size: int = 64) -> None:
        super().__init__(backend, batch_size)
        self.weight, self.bias = weight.float().cpu(), float(bias)

    def score_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(images.float().cpu() @ self.weight + self.bias)

    @classmethod
    def fit(cls, backend: VLMBackend, frames: Frames, success: np.ndarray, batch_size: int = 64,
            holdout: float = 0.2, l2: float = 1e-3, steps: int = 300, seed: int = 0) -> tuple[SuccessClassifier,
                                                                                              SuccessFit]:
        """Fit the head on labelled frames (a random `holdout` share kept out to report accuracy)."""
        if not 0.0 <= holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {holdout}")
        embeddings = embed_frames(backend, frames, batch_size)
        labels = torch.as_tensor(success, dtype=torch.float32)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        held = order[: int(round(holdout * len(labels)))]
        train = order[len(held):]
        weight, bias = fit_logistic(embeddings[train], labels[train], l2, steps)
        classifier = cls(backend, weight, bias, batch_size)

        def accuracy(index: torch.Tensor) -> float:
            if len(index) == 0:
                return float("nan")
            predicted = classifier.score_embeddings(embeddings[index]) > 0.5
            return float((predicted == labels[index].bool()).float().mean())

        return classifier, SuccessFit(accuracy(train), accuracy(held), len(train), len(held))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"weight": self.weight, "bias": self.bias, "backend": self.backend.name,
                    "dim": int(self.weight.shape[0])}, path)
        return path

    @classmethod
    def load(cls, path: str | Path, backend: VLMBackend, batch_size: int = 64) -> SuccessClassifier:
        """A saved head on `backend`, which must be the kind and width it was fitted on."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no success head at {path} (fit one with `robotrl reward success-head`)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        dim = int(backend.embed_texts(["a"]).shape[-1])
        if state["backend"] != backend.name or state["dim"] != dim:
            raise ValueError(f"{path} was fitted on a {state['backend']} model with {state['dim']}-dim embeddings, "
                             f"not this {backend.name} model ({dim}-dim): fit it again on this model")
        return cls(backend, state["weight"], state["bias"], batch_size)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "backend": self.backend.name}


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int) -> tuple[torch.Tensor, float]:
    """L2-regularised logistic regression with the classes weighted to contribute equally, by L-BFGS."""
    x, y = x.double(), y.double()
    positives = y.sum().clamp_min(1.0)
    negatives = (len(y) - y.sum()).clamp_min(1.0)
    sample_weight = torch.where(y > 0, 0.5 / positives, 0.5 / negatives)
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x @ weight + bias
        loss = (sample_weight * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach().float(), float(bias.detach())

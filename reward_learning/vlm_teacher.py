"""A vision-language model as a preference teacher, in the spirit of RL-VLM-F (Wang et al. 2024).

RL-VLM-F shows a generative VLM the final frames of two segments with the task description and asks which one is
closer to the goal, discarding "no preference" answers. Here the judge is a contrastive model (CLIP/SigLIP through
`VLMReward`, or a fitted success classifier): each segment gets the mean VLM reward of `frames` evenly spaced frames
ending at its last step (1 = the final frame, as in RL-VLM-F), and a difference below `margin` means no preference
(SKIP). Frames are re-rendered from the segments' recorded simulator states by a `render` function the caller
supplies, since this package knows no simulators.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from reward_learning.segments import Label, Segments
from reward_learning.teachers import Teacher
from reward_learning.vlm import FrameReward

Renderer = Callable[[np.ndarray], np.ndarray]
"""Simulator states [N, d] -> uint8 frames [N, H, W, 3]."""


class VLMTeacher(Teacher):
    """Labels pairs of segments by which one's frames a vision-language model scores closer to the goal prompts."""

    name = "vlm"

    def __init__(self, reward: FrameReward, render: Renderer, frames: int = 1, margin: float = 0.0) -> None:
        if frames < 1:
            raise ValueError(f"frames must be >= 1; got {frames}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0; got {margin}")
        self.reward, self.render = reward, render
        self.frames, self.margin = frames, margin

    def segment_scores(self, segments: Segments) -> torch.Tensor:
        """Mean VLM reward [q] of each segment's judged frames (all rendered and scored in one batch)."""
        if segments.state.shape[-1] == 0:
            raise ValueError("the VLM teacher re-renders segments from simulator states: record them "
                             "(reward.preference.record_states: true)")
        count, length = segments.state.shape[:2]
        steps = torch.linspace(0, length - 1, min(self.frames, length) + 1)[1:].round().long()
        states = segments.state[:, steps].reshape(count * len(steps), -1).cpu().numpy()
        scores = self.reward.score_frames(self.render(states))
        return scores.reshape(count, len(steps)).mean(1)

    def close(self) -> None:
        """Close the renderer if it owns resources (e.g. a render env)."""
        close = getattr(self.render, "close", None)
        if close is not None:
            close()

    def label(self, left: Segments, right: Segments, rng: np.random.Generator) -> np.ndarray:
        difference = (self.segment_scores(right) - self.segment_scores(left)).numpy()
        labels = np.where(difference > 0, Label.RIGHT, Label.LEFT).astype(np.int64)
        labels[np.abs(difference) <= self.margin] = Label.SKIP
        return labels

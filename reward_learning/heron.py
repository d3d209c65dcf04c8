"""HERON (Bukharin et al., "Hierarchical Reward Modeling"): label segment pairs with a decision tree over an
importance ranking of reward factors instead of a weighted sum of them.

A user ranks the reward factors (the env's reward components) in levels, most important first, and says per level how
large a difference must be to count (a margin multiplier). The teacher compares two segments level by level: the
first level whose difference exceeds its margin decides; if none does, the pair is a tie. Reward models then learn
from these labels exactly as from any other teacher's (HERON is a labeller in front of the PEBBLE trainer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from reward_learning.segments import Label, Segments
from reward_learning.teachers import Teacher

Direction = Literal["maximize", "minimize"]
TieRule = Literal["skip", "equal"]
CONSTANT_TOLERANCE = 1e-9
"""A factor whose std over the pool is below this share of its largest magnitude is constant there (rounding noise)."""


def parse_levels(levels: Sequence[str | Sequence[str]]) -> list[tuple[str, ...]]:
    """Each level as a tuple of factor names (a bare name is a one-factor level); ValueError for an empty level or a
    factor named twice."""
    parsed = [(level,) if isinstance(level, str) else tuple(level) for level in levels]
    if not parsed:
        raise ValueError("heron.levels is empty: rank at least one reward component")
    if any(not level for level in parsed):
        raise ValueError(f"heron.levels has an empty level: {[list(level) for level in parsed]}")
    names = [name for level in parsed for name in level]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"heron.levels names {repeated} more than once; each factor belongs to one level")
    return parsed


def parse_margins(margins: float | Sequence[float], num_levels: int) -> list[float]:
    """One finite, non-negative multiplier per level (a single number applies to every level)."""
    values = [float(margins)] * num_levels if isinstance(margins, int | float) else [float(m) for m in margins]
    if len(values) != num_levels:
        raise ValueError(f"heron.margins has {len(values)} values for {num_levels} levels; give one per level")
    if not all(math.isfinite(m) and m >= 0 for m in values):
        raise ValueError(f"heron.margins must be finite and >= 0, got {values}")
    return values


class HeronConfig(BaseModel):
    """The `reward.preference.heron` section: the importance ranking and how HERON compares and breaks ties."""

    model_config = ConfigDict(extra="forbid")

    levels: list[str | list[str]] = Field(description="reward components, most important first; a list of names "
                                          "is a level of equally important factors")
    margins: float | list[float] = Field(1.0, description="per level: a difference counts only above this many "
                                         "standard deviations (over the round's candidate segments); one number = "
                                         "the same for every level; 0 = any difference counts")
    directions: dict[str, Direction] = Field(default_factory=dict, description="override the env's reward spec: "
                                             "component -> maximize | minimize")
    ties: TieRule = Field("skip", description="pairs no level decides: skip (discard, as the paper does) or equal "
                          "(a 0.5 soft label)")
    per_transition: bool = Field(False, description="compare single transitions (needs segment_length: 1, as the "
                                 "paper's public code) instead of segment sums (the paper)")

    @model_validator(mode="after")
    def _check(self) -> HeronConfig:
        parse_margins(self.margins, len(parse_levels(self.levels)))
        return self


class HeronTeacher(Teacher):
    """HERON's decision tree over ranked reward factors; any number of levels, each one or more factors.

    For each segment the factors are summed over its real steps (absorbing steps after termination count 0), or,
    with `per_transition`, taken from its single step. A level's value is the sum of its factors, each signed by its
    direction (+ maximize, - minimize) and divided by its std over the pool; its margin is the level's multiplier
    times the std of that value over the pool. A level prefers one segment when its value exceeds the other's by more
    than the margin; the first level that prefers a segment gives the label, so a level decides only when all earlier
    levels are within their margins. Pairs no level decides are SKIP (`ties="skip"`, the paper: dropped from the
    loss; they still count against the label budget) or EQUAL (`ties="equal"`, a 0.5 soft target).

    Deliberate choices:
    - Groups: equally important factors are compared on the sum of their std-normalised signed values, so each
      weighs the same however it is scaled. A one-factor level reduces to the paper's rule
      s*z(x) > s*z(y) + c * std(z).
    - Every level has its own multiplier (the paper's robotics code reuses the second one for levels 3 and 4).
    - The pool is the round's candidate segments, given by `observe_candidates` before labelling (the paper uses the
      whole signal buffer on classic control and the minibatch on robotics); without it, the segments being labelled.
      The next `label` call uses up the candidates, so a later round never reuses an earlier round's scale.
    - Labels depend on the factors only through std-relative differences, so scaling any factor by a positive
      constant changes no label. Factors in no level are ignored. The teacher is deterministic (`rng` is unused).
    - A factor constant over the pool (std within rounding noise of its magnitude) adds nothing to its level.
    - A transition is a one-step segment: `per_transition` only checks that the segments are one step long.
    - HERON only labels: the reward model is trained on these labels and the agent on that model (not the paper's
      robotics variant, which regresses the critic on the reward model while advantages use the env reward).
    """

    name = "heron"
    wants_candidates = True

    def __init__(self, levels: Sequence[str | Sequence[str]], *, component_names: Sequence[str],
                 directions: Mapping[str, str], margins: float | Sequence[float] = 1.0,
                 ties: TieRule = "skip", per_transition: bool = False) -> None:
        self.component_names = list(component_names)
        self.levels = parse_levels(levels)
        self.margins = parse_margins(margins, len(self.levels))
        unknown = sorted({n for level in self.levels for n in level} - set(self.component_names))
        if unknown:
            raise ValueError(f"heron.levels: unknown reward component(s) {unknown}; this env declares "
                             f"{self.component_names}")
        named = [n for level in self.levels for n in level]
        missing = [n for n in named if n not in directions]
        if missing:
            raise ValueError(f"heron.directions: no direction (maximize or minimize) for {missing}")
        wrong = {n: directions[n] for n in named if directions[n] not in ("maximize", "minimize")}
        if wrong:
            raise ValueError(f"heron.directions must be maximize or minimize, got {wrong}")
        if ties not in ("skip", "equal"):
            raise ValueError(f"heron.ties must be skip or equal, got {ties!r}")
        self.directions = {n: directions[n] for n in named}
        self.tie_label = Label.SKIP if ties == "skip" else Label.EQUAL
        self.per_transition = bool(per_transition)
        self._columns = [[self.component_names.index(n) for n in level] for level in self.levels]
        self._signs = [np.array([1.0 if directions[n] == "maximize" else -1.0 for n in level]) for level in self.levels]
        self._pool_scales: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_config(cls, config: HeronConfig, *, component_names: Sequence[str],
                    spec_directions: Mapping[str, str]) -> HeronTeacher:
        """The teacher a `heron:` config section describes; directions default to the env's reward spec."""
        unknown = sorted(set(config.directions) - set(component_names))
        if unknown:
            raise ValueError(f"heron.directions: unknown reward component(s) {unknown}; this env declares "
                             f"{list(component_names)}")
        return cls(config.levels, component_names=component_names, directions={**spec_directions, **config.directions},
                   margins=config.margins, ties=config.ties, per_transition=config.per_transition)

    def factor_totals(self, segments: Segments) -> np.ndarray:
        """Each segment's factors summed over its real steps, [q, k] float64 (its step's factors per transition)."""
        if self.per_transition and segments.length != 1:
            raise ValueError(f"per-transition HERON compares single transitions, got {segments.length}-step "
                             "segments: set segment_length to 1")
        components = segments.components.detach().to("cpu", torch.float64)
        if components.shape[-1] != len(self.component_names):
            raise ValueError(f"segments carry {components.shape[-1]} reward components, the teacher declares "
                             f"{len(self.component_names)}: {self.component_names}")
        return components.masked_fill(segments.absorbing.cpu()[..., None], 0.0).sum(1).numpy()

    def _level_values(self, totals: np.ndarray, factor_std: np.ndarray) -> list[np.ndarray]:
        """Per level, [q] values: sum of signed factors in units of their pool std (constant factors add 0)."""
        return [(totals[:, cols] * signs / factor_std[cols]).sum(1)
                for cols, signs in zip(self._columns, self._signs, strict=True)]

    def scales(self, totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(std of each factor, std of each level's value) over a pool of factor totals [n, k]; a constant factor
        gets std inf (it contributes 0), a constant level std 0."""
        ddof = 1 if len(totals) > 1 else 0
        factor_std = totals.std(0, ddof=ddof)
        constant = factor_std <= CONSTANT_TOLERANCE * np.abs(totals).max(0, initial=0.0)
        factor_std = np.where(constant, np.inf, factor_std)
        level_std = np.array([v.std(ddof=ddof) for v in self._level_values(totals, factor_std)])
        return factor_std, level_std

    def observe_candidates(self, candidates: Segments) -> None:
        """Fix the margins' scales for the next `label` call on this round's candidate segments."""
        self._pool_scales = self.scales(self.factor_totals(candidates)) if len(candidates) else None

    def label(self, left: Segments, right: Segments, rng: np.random.Generator) -> np.ndarray:
        if len(left) != len(right) or left.length != right.length:
            raise ValueError(f"query halves differ: {len(left)}x{left.length} vs {len(right)}x{right.length} steps")
        totals_l, totals_r = self.factor_totals(left), self.factor_totals(right)
        pool_scales, self._pool_scales = self._pool_scales, None  # one round's candidates scale one round's labels
        labels = np.full(len(left), int(self.tie_label), dtype=np.int64)
        if len(left) == 0:
            return labels
        factor_std, level_std = pool_scales or self.scales(np.concatenate([totals_l, totals_r]))
        undecided = np.ones(len(left), dtype=bool)
        levels = zip(self._level_values(totals_l, factor_std), self._level_values(totals_r, factor_std),
                     self.margins, level_std, strict=True)
        for value_l, value_r, multiplier, std in levels:
            margin = multiplier * std
            left_wins = undecided & (value_l > value_r + margin)
            right_wins = undecided & (value_r > value_l + margin)
            labels[left_wins], labels[right_wins] = Label.LEFT, Label.RIGHT
            undecided &= ~(left_wins | right_wins)
        return labels

"""Training reward ensembles from preference labels: the Bradley-Terry (partial-return) model with soft targets for
"equal", the regret model of Knox et al. as an option, and SURF's temporal crops and confident pseudo-labels.

Partial return: P[right > left] = sigmoid(sum r(right) - sum r(left)).
Regret (deterministic transitions): a segment scores sum r + V*(s_end) - V*(s_start). Knox et al. compute V* from
successor features in small MDPs; for continuous control we learn a potential V per ensemble member jointly with r
(an approximation, documented as such). Agents still train on r.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from reward_learning.models import RewardEnsemble
from reward_learning.segments import Label, Segments, right_preferred_target


class SURFConfig(BaseModel):
    """SURF (Park et al. 2022): crop segments in time and add confident pseudo-labels on unlabelled pairs."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    window: int = Field(5, ge=0, description="extra steps stored on each side of a labelled segment")
    crop_range: int = Field(5, ge=0, description="cropped length is drawn from [L - c, L + c]")
    unlabeled_ratio: int = Field(10, ge=0, description="unlabelled pairs sampled per labelled query")
    threshold: float = Field(0.95, gt=0.5, le=1.0, description="keep a pseudo-label when max P >= threshold")
    weight: float = Field(1.0, ge=0.0, description="lambda_u, weight of the pseudo-label loss")
    unlabeled_batch_ratio: int = Field(1, ge=1, description="mu: unlabelled batch = mu x labelled batch")


def _fields_of(segments: Segments, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {name: getattr(segments, name) for name in names}


class RewardLearner:
    """Holds the labelled pairs and trains a `RewardEnsemble` on them, each member on its own shuffle (B-Pref)."""

    def __init__(self, model: RewardEnsemble, surf: SURFConfig | None = None, seed: int = 0) -> None:
        self.model = model
        self.config = model.config
        self.surf = surf or SURFConfig()
        if self.surf.enabled and self.config.preference_model == "regret":
            raise ValueError("SURF's temporal crops are not defined for the regret preference model; disable one")
        self.regret = self.config.preference_model == "regret"
        self.names = tuple(dict.fromkeys((*model.fields, *(("obs", "next_obs") if self.regret else ()), "absorbing")))
        self.opt = torch.optim.Adam(model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.left: dict[str, torch.Tensor] = {}
        self.right: dict[str, torch.Tensor] = {}
        self.target = torch.zeros(0)
        self.u_left: dict[str, torch.Tensor] = {}
        self.u_right: dict[str, torch.Tensor] = {}
        self.rounds = 0

    def __len__(self) -> int:
        return len(self.target)

    @property
    def segment_length(self) -> int | None:
        """Stored length (labelled length + 2 * SURF window when SURF is on)."""
        return next(iter(self.left.values())).shape[1] if self.left else None

    # ------------------------------------------------------------------------------------------------ data
    def add_labels(self, left: Segments, right: Segments, labels: np.ndarray | torch.Tensor) -> int:
        """Add labelled pairs; SKIP labels are dropped (they carry no preference). Returns the number kept."""
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if len(labels) != len(left) or len(left) != len(right):
            raise ValueError(f"{len(left)} left, {len(right)} right segments and {len(labels)} labels do not match")
        keep = labels != Label.SKIP
        if not bool(keep.any()):
            return 0
        target = right_preferred_target(labels[keep]).to(self.model.device)
        self._append(self.left, _fields_of(left[keep], self.names))
        self._append(self.right, _fields_of(right[keep], self.names))
        self.target = torch.cat([self.target.to(self.model.device), target])
        return int(keep.sum())

    def add_unlabelled(self, left: Segments, right: Segments) -> None:
        """Add pairs without labels for SURF's pseudo-labelling (same stored length as the labelled pairs)."""
        stored = self.segment_length
        if stored is not None and (left.length != stored or right.length != stored):
            raise ValueError(f"unlabelled segments have {left.length}/{right.length} steps but labelled ones have "
                             f"{stored}; sample both with the same length")
        self._append(self.u_left, _fields_of(left, self.names))
        self._append(self.u_right, _fields_of(right, self.names))

    def keep_labels(self, keep: torch.Tensor) -> None:
        """Keep only the labelled pairs where `keep` ([len(self)] bool) is True, e.g. to drop withdrawn labels."""
        keep = keep.to(self.target.device)
        self.left = {k: v[keep] for k, v in self.left.items()}
        self.right = {k: v[keep] for k, v in self.right.items()}
        self.target = self.target[keep]

    def _append(self, store: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> None:
        device = self.model.device
        for name, value in new.items():
            value = value.to(device)
            if name in store and store[name].shape[1:] != value.shape[1:]:
                raise ValueError(f"segments of shape {tuple(value.shape[1:])} cannot join stored ones of shape "
                                 f"{tuple(store[name].shape[1:])} (segment length or observation shape differs)")
            store[name] = torch.cat([store[name], value]) if name in store else value

    # ---------------------------------------------------------------------------------------------- scores
    def _scores(self, fields: dict[str, torch.Tensor], per_member: bool, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Segment scores [E, b]: (masked) summed rewards, plus V(end) - V(start) for the regret model.

        Absorbing steps (after a termination) contribute 0, and so does V of a terminal end state.
        """
        absorbing = fields["absorbing"]
        rewards = self.model.member_rewards(fields, per_member=per_member).masked_fill(absorbing, 0.0)  # [E, b, L]
        score = (rewards * mask).sum(-1) if mask is not None else rewards.sum(-1)
        if self.regret:
            start, end = fields["obs"][..., 0, :], fields["next_obs"][..., -1, :]
            end_value = self.model.potentials(end, per_member) * (~absorbing[..., -1]).float()
            score = score + end_value - self.model.potentials(start, per_member)
        return score

    @torch.no_grad()
    def prob_right(self, left: Segments, right: Segments, chunk: int | None = None) -> torch.Tensor:
        """[E, q] probability, per member, that the right segment is preferred (for query selection).

        Evaluated `chunk` pairs at a time (default: ~4k steps per side on a CPU, where small batches stay in cache).
        """
        chunk = chunk or (max(1, 4096 // max(1, left.length)) if self.model.device.type == "cpu" else 4096)
        out = []
        for start in range(0, len(left), chunk):
            sl = slice(start, start + chunk)
            lf = {k: v.to(self.model.device) for k, v in _fields_of(left[sl], self.names).items()}
            rf = {k: v.to(self.model.device) for k, v in _fields_of(right[sl], self.names).items()}
            out.append(torch.sigmoid(self._scores(rf, False) - self._scores(lf, False)))
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def accuracy(self, left: Segments, right: Segments, labels: np.ndarray) -> float:
        """Share of strict (left/right) labels the ensemble-mean preference gets right; nan if there are none."""
        labels = np.asarray(labels)
        strict = (labels == Label.LEFT) | (labels == Label.RIGHT)
        if not strict.any():
            return float("nan")
        p = self.prob_right(left[strict], right[strict]).mean(0).cpu().numpy()
        return float(np.mean((p > 0.5) == (labels[strict] == Label.RIGHT)))

    # -------------------------------------------------------------------------------------------- training
    def _crop_mask(self, e: int, b: int, stored: int) -> torch.Tensor:
        """SURF crop: per pair a random length in [L - c, L + c] at a random offset, as a [E, b, stored] mask."""
        base = stored - 2 * self.surf.window
        lo, hi = max(1, base - self.surf.crop_range), min(stored, base + self.surf.crop_range)
        length = torch.randint(lo, hi + 1, (e, b, 1), generator=self.generator)
        start = (torch.rand((e, b, 1), generator=self.generator) * (stored - length + 1)).long()
        steps = torch.arange(stored).view(1, 1, -1)
        return ((steps >= start) & (steps < start + length)).float().to(self.model.device)

    def train(self) -> dict[str, float]:
        """One training round: up to `max_epochs` passes (each member on its own shuffle), stopping early once the
        mean train accuracy exceeds `target_accuracy`. Returns loss, accuracy and epochs used."""
        n = len(self)
        if n == 0:
            raise ValueError("no labelled pairs to train on (all labels so far were skips)")
        c, size, device = self.config, self.model.size, self.model.device
        strict = self.target != 0.5
        smoothed = self.target * (1 - 2 * c.label_margin) + c.label_margin
        stored = self.segment_length or 0
        surf = self.surf.enabled and len(next(iter(self.u_left.values()), ())) > 0
        loss_sum, accuracy, epochs = 0.0, 1.0, 0
        self.model.train()
        while epochs < c.max_epochs:
            epochs += 1
            perms = torch.stack([torch.randperm(n, generator=self.generator) for _ in range(size)]).to(device)
            correct, counted, loss_sum, batches = 0.0, 0.0, 0.0, 0
            for start in range(0, n, c.batch_size):
                idx = perms[:, start:start + c.batch_size]  # [E, b]
                left = {k: v[idx] for k, v in self.left.items()}
                right = {k: v[idx] for k, v in self.right.items()}
                masks = (self._crop_mask(size, idx.shape[1], stored), self._crop_mask(size, idx.shape[1], stored)) \
                    if self.surf.enabled else (None, None)
                logits = self._scores(right, True, masks[1]) - self._scores(left, True, masks[0])
                loss = F.binary_cross_entropy_with_logits(logits, smoothed[idx], reduction="none").mean(1).sum()
                if surf:
                    loss = loss + self._pseudo_label_loss(idx.shape[1] * self.surf.unlabeled_batch_ratio, stored)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                with torch.no_grad():
                    hard = strict[idx]
                    correct += float((((logits > 0).float() == self.target[idx]) & hard).sum())
                    counted += float(hard.sum())
                    loss_sum += float(loss) / size  # per member
                    batches += 1
            accuracy = correct / counted if counted else 1.0
            loss_sum /= batches
            if accuracy > c.target_accuracy:
                break
        self.model.eval()
        self.rounds += 1
        return {"loss": loss_sum, "train_accuracy": accuracy, "epochs": float(epochs), "pairs": float(n)}

    def _pseudo_label_loss(self, batch: int, stored: int) -> torch.Tensor:
        """SURF: cross-entropy on cropped unlabelled pairs against confident predictions on their central window."""
        size = self.model.size
        m = len(next(iter(self.u_left.values())))
        idx = torch.randint(0, m, (size, min(batch, m)), generator=self.generator).to(self.model.device)
        left = {k: v[idx] for k, v in self.u_left.items()}
        right = {k: v[idx] for k, v in self.u_right.items()}
        w = self.surf.window
        r_left = self.model.member_rewards(left, per_member=True).masked_fill(left["absorbing"], 0.0)
        r_right = self.model.member_rewards(right, per_member=True).masked_fill(right["absorbing"], 0.0)
        with torch.no_grad():
            central = r_right[..., w:stored - w].sum(-1) - r_left[..., w:stored - w].sum(-1)
            p_right = torch.sigmoid(central)
            confident = (torch.maximum(p_right, 1 - p_right) >= self.surf.threshold).float()
            pseudo = (p_right > 0.5).float()
        mask_l = self._crop_mask(size, idx.shape[1], stored)
        mask_r = self._crop_mask(size, idx.shape[1], stored)
        logits = (r_right * mask_r).sum(-1) - (r_left * mask_l).sum(-1)
        per_pair = F.binary_cross_entropy_with_logits(logits, pseudo, reduction="none")
        return self.surf.weight * (per_pair * confident).mean(1).sum()

    # ---------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Labelled and unlabelled pairs, optimiser and RNG (the model's weights are saved by its owner)."""
        cpu = lambda d: {k: v.cpu() for k, v in d.items()}  # noqa: E731
        return {"left": cpu(self.left), "right": cpu(self.right), "target": self.target.cpu(),
                "u_left": cpu(self.u_left), "u_right": cpu(self.u_right), "opt": self.opt.state_dict(),
                "generator": self.generator.get_state(), "rounds": self.rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.model.device
        for name in ("left", "right", "u_left", "u_right"):
            setattr(self, name, {k: v.to(device) for k, v in state[name].items()})
        self.target = state["target"].to(device)
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["generator"])
        self.rounds = state["rounds"]

"""Learned reward models: ensembles of MLPs (vector observations) or CNNs (pixels) with mean, std and a conservative
`mean - k*std` output, optional input/output normalisation, and save/load.

Pixel observations use ONE channel order: channel-first `[C, H, W]` (as torch convolutions expect), uint8 in
[0, 255] or float in [0, 1]. Channel-last frames are rejected with a message, never silently mis-read (the HWC/CHW
mix-up of imitation #486).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from reward_learning.networks import EnsembleMLP, mlp
from reward_learning.sources import RewardSource, Transitions

InputKind = Literal["obs_action", "obs_action_next_obs", "obs", "next_obs", "obs_next_obs", "obs_action_components"]
"""What a reward network sees; "obs_action_components" adds the env's raw reward components (HERON's factors)."""


class RewardModelConfig(BaseModel):
    """Architecture and training hyper-parameters of a reward ensemble (defaults follow PEBBLE/B-Pref)."""

    model_config = ConfigDict(extra="forbid")

    ensemble_size: int = Field(3, ge=1)
    hidden_sizes: list[int] = Field(default_factory=lambda: [256, 256, 256], min_length=1)
    activation: str = "leaky_relu"
    output: Literal["tanh", "linear"] = Field("tanh", description="tanh bounds each network output to [-1, 1] "
                                              "(B-Pref); rewards are relative to the absorbing state, so in (-2, 2)")
    inputs: InputKind = "obs_action"
    encoder: Literal["mlp", "cnn"] = Field("mlp", description="cnn for channel-first pixel observations")
    normalize_inputs: bool = Field(False, description="standardise inputs with statistics fitted on the first "
                                   "training data (then frozen)")
    normalize_output: bool = Field(False, description="divide the reward given to the agent by the std of the "
                                   "ensemble mean over recent transitions, refitted after each round (no shift: "
                                   "the sign relative to termination must survive)")
    conservative_k: float = Field(0.0, ge=0.0, description="agent reward = mean - k * std over the ensemble")
    preference_model: Literal["partial_return", "regret"] = Field(
        "partial_return", description="partial_return: Bradley-Terry on summed rewards; regret: Knox et al., with "
        "a learned potential V standing in for V*")
    lr: float = Field(3e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(128, gt=0, description="labelled pairs per gradient step")
    max_epochs: int = Field(200, gt=0, description="epochs per training round (B-Pref reward_update)")
    target_accuracy: float = Field(0.97, gt=0.0, le=1.0, description="stop a round early at this train accuracy")
    label_margin: float = Field(0.0, ge=0.0, lt=0.5, description="label smoothing: targets become m and 1 - m")


class CNNEncoder(nn.Module):
    """Three-layer convolutional torso (Nature-DQN shape, adapted to small frames) for one ensemble member."""

    def __init__(self, obs_shape: tuple[int, ...], out_dim: int = 256) -> None:
        super().__init__()
        channels, large = obs_shape[0], min(obs_shape[1:]) >= 64
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, 8 if large else 3, stride=4 if large else 2), nn.ReLU(),
            nn.Conv2d(32, 64, 4 if large else 3, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *obs_shape)).shape[1]
        self.project = nn.Linear(flat, out_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return F.relu(self.project(self.convs(obs)))


def check_pixel_shape(obs_shape: tuple[int, ...]) -> None:
    """Pixel observations must be channel-first [C, H, W]; raise with a fix-it message otherwise."""
    if len(obs_shape) != 3:
        raise ValueError(f"the CNN reward model needs image observations [C, H, W], got shape {obs_shape}")
    c, h, w = obs_shape
    if c > 4 or (w <= 4 and c > w):
        raise ValueError(f"pixel observations must be channel-first [C, H, W] with C <= 4; got {obs_shape}, which "
                         "looks channel-last [H, W, C]: transpose frames with frame.transpose(2, 0, 1)")


class RewardEnsemble(nn.Module):
    """An ensemble of reward networks r_i(s, a[, s']); `forward` returns the reward given to agents.

    Inputs arrive as a dict of tensors with any leading shape (`[N]` transitions or `[q, L]` segments). With
    `per_member=True` every field carries an extra leading ensemble axis so each member can see its own batch.
    `component_dim` is the number of reward components, needed when the inputs include them.
    """

    def __init__(self, obs_shape: tuple[int, ...], action_dim: int, config: RewardModelConfig | None = None,
                 discrete_actions: bool = False, component_dim: int = 0) -> None:
        super().__init__()
        self.config = c = config or RewardModelConfig()
        self.obs_shape, self.action_dim, self.discrete_actions = tuple(obs_shape), action_dim, discrete_actions
        self.component_dim = component_dim
        self.fields: tuple[str, ...] = {"obs_action": ("obs", "action"), "obs": ("obs",), "next_obs": ("next_obs",),
                                        "obs_action_next_obs": ("obs", "action", "next_obs"),
                                        "obs_next_obs": ("obs", "next_obs"),
                                        "obs_action_components": ("obs", "action", "components")}[c.inputs]
        if "components" in self.fields and (component_dim < 1 or c.encoder == "cnn"):
            raise ValueError(f"inputs {c.inputs} need the MLP encoder and the env's reward components "
                             f"(component_dim={component_dim}); use another model.inputs for envs without them")
        self.size = c.ensemble_size
        uses_action = "action" in self.fields
        if c.encoder == "cnn":
            check_pixel_shape(self.obs_shape)
            if c.normalize_inputs:
                raise ValueError("normalize_inputs applies to vector observations; pixels are scaled to [0, 1]")
            if c.preference_model == "regret":
                raise ValueError("the regret preference model is implemented for vector observations only")
            n_obs = sum(f in ("obs", "next_obs") for f in self.fields)
            self.encoders = nn.ModuleList(CNNEncoder(self.obs_shape) for _ in range(self.size))
            head_in = 256 * n_obs + (action_dim if uses_action else 0)
            self.heads = nn.ModuleList(mlp(head_in, c.hidden_sizes[-1:], 1, c.activation) for _ in range(self.size))
        else:
            if len(self.obs_shape) != 1:
                raise ValueError(f"the MLP reward model needs flat observations, got shape {self.obs_shape}; "
                                 "use encoder: cnn for channel-first images")
            obs_dim = self.obs_shape[0]
            widths = {"action": action_dim, "components": component_dim}
            in_dim = sum(widths.get(f, obs_dim) for f in self.fields)
            self.net = EnsembleMLP(self.size, in_dim, c.hidden_sizes, 1, c.activation)
            self.register_buffer("in_mean", torch.zeros(in_dim))
            self.register_buffer("in_std", torch.ones(in_dim))
            if c.preference_model == "regret":
                self.potential = EnsembleMLP(self.size, obs_dim, c.hidden_sizes, 1, c.activation)
        # the reward of the absorbing state after termination; every reward is reported relative to it (see below)
        self.absorbing_logit = nn.Parameter(torch.zeros(self.size))
        self.register_buffer("inputs_fitted", torch.tensor(False))
        self.register_buffer("out_std", torch.tensor(1.0))

    @property
    def needs(self) -> frozenset[str]:
        return frozenset(self.fields)

    @property
    def device(self) -> torch.device:
        return self.out_std.device

    # ----------------------------------------------------------------------------------------------- inputs
    def _action(self, action: torch.Tensor) -> torch.Tensor:
        if self.discrete_actions:
            return F.one_hot(action.reshape(action.shape[:-1]).long(), self.action_dim).float()
        return action.float()

    def _features(self, batch: Transitions, lead: int) -> torch.Tensor:
        """MLP input: the configured fields concatenated (and standardised), shape [*leading, in_dim]."""
        parts = []
        for name in self.fields:
            value = batch[name]
            if name == "action":
                parts.append(self._action(value))
            else:
                parts.append(value.float().reshape(*value.shape[:lead], -1))
        x = torch.cat(parts, dim=-1)
        if self.config.normalize_inputs:
            x = (x - self.in_mean) / self.in_std
        return x

    @torch.no_grad()
    def fit_input_stats(self, batch: Transitions) -> None:
        """Fit the input standardisation on a batch of transitions (done once; the stats stay frozen after)."""
        if self.config.encoder != "mlp" or not self.config.normalize_inputs or bool(self.inputs_fitted):
            return
        saved = self.config.normalize_inputs
        self.config.normalize_inputs = False
        try:
            x = self._features(batch, 1)
        finally:
            self.config.normalize_inputs = saved
        self.in_mean.copy_(x.mean(0))
        std = x.std(0) if len(x) > 1 else torch.ones_like(self.in_std)
        self.in_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))  # constant so far: leave unscaled
        self.inputs_fitted.fill_(True)

    # ---------------------------------------------------------------------------------------------- outputs
    def _squash(self, r: torch.Tensor) -> torch.Tensor:
        return torch.tanh(r) if self.config.output == "tanh" else r

    def member_rewards(self, batch: Transitions, per_member: bool = False) -> torch.Tensor:
        """Per-member rewards r_i(s, a) - r_i(absorbing), shape [E, *leading] (leading = the fields' shape before
        the feature axes).

        Preferences only fix rewards up to a constant, but with terminations the constant matters: an agent treats
        the state after termination as worth 0. So each member also learns the reward of the absorbing state
        (segments may run past a termination) and every reward is given relative to it; absorbing steps then have
        reward exactly 0, consistent with the agent. Without terminations that offset cancels out and stays 0.
        """
        lead = batch[self.fields[0]].dim() - len(self.obs_shape)  # fields[0] is always an observation
        if self.config.encoder == "cnn":
            rewards = self._cnn_rewards(batch, lead, per_member)
        else:
            x = self._features(batch, lead)
            shape = x.shape[:-1] if per_member else (self.size, *x.shape[:-1])
            flat = x.reshape(self.size, -1, x.shape[-1]) if per_member else x.reshape(-1, x.shape[-1])
            rewards = self._squash(self.net(flat).reshape(shape))
        offset = self._squash(self.absorbing_logit)
        return rewards - offset.view(self.size, *([1] * (rewards.dim() - 1)))

    def _cnn_rewards(self, batch: Transitions, lead: int, per_member: bool) -> torch.Tensor:
        outputs = []
        for e in range(self.size):
            parts = []
            for name in self.fields:
                value = batch[name][e] if per_member else batch[name]
                lead_shape = value.shape[: lead - 1] if per_member else value.shape[:lead]
                if name == "action":
                    parts.append(self._action(value).reshape(-1, self.action_dim))
                    continue
                frames = value.reshape(-1, *self.obs_shape)
                frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
                parts.append(self.encoders[e](frames))
            outputs.append(self.heads[e](torch.cat(parts, -1)).reshape(lead_shape))
        return self._squash(torch.stack(outputs))

    def potentials(self, obs: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        """Learned potential V(s) per member, [E, *leading] (regret preference model only)."""
        lead_shape = obs.shape[: obs.dim() - 1]
        x = obs.float()
        if self.config.normalize_inputs:
            x = (x - self.in_mean[: self.obs_shape[0]]) / self.in_std[: self.obs_shape[0]]
        if per_member:
            return self.potential(x.reshape(self.size, -1, x.shape[-1])).reshape(lead_shape)
        return self.potential(x.reshape(-1, x.shape[-1])).reshape(self.size, *lead_shape)

    def forward(self, batch: Transitions) -> torch.Tensor:
        """The reward agents train on: ensemble mean minus `conservative_k` std, optionally standardised."""
        members = self.member_rewards(batch)
        reward = members.mean(0)
        if self.config.conservative_k > 0 and self.size > 1:
            reward = reward - self.config.conservative_k * members.std(0)
        if self.config.normalize_output:
            reward = reward / self.out_std
        return reward

    def mean_std(self, batch: Transitions) -> tuple[torch.Tensor, torch.Tensor]:
        """Ensemble mean and standard deviation (std is 0 for a single member)."""
        members = self.member_rewards(batch)
        std = members.std(0) if self.size > 1 else torch.zeros_like(members[0])
        return members.mean(0), std

    @torch.no_grad()
    def fit_output_stats(self, batch: Transitions) -> None:
        """Refit the output scale on a batch of (recent) transitions (a scale only: a shift would move rewards
        across the absorbing state's 0 and teach agents to terminate early, or never)."""
        if not self.config.normalize_output:
            return
        saved = self.config.normalize_output
        self.config.normalize_output = False
        try:
            reward = self(batch)
        finally:
            self.config.normalize_output = saved
        self.out_std.copy_(reward.std().clamp_min(1e-6) if reward.numel() > 1 else torch.tensor(1.0))

    # ------------------------------------------------------------------------------------------------- I/O
    def save(self, path: str | Path) -> None:
        """Write weights, architecture and normalisation statistics; `RewardEnsemble.load` rebuilds the model."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"format": "robotrl-reward-ensemble/1", "config": self.config.model_dump(),
                    "obs_shape": list(self.obs_shape), "action_dim": self.action_dim,
                    "discrete_actions": self.discrete_actions, "component_dim": self.component_dim,
                    "state_dict": {k: v.cpu() for k, v in self.state_dict().items()}}, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> RewardEnsemble:
        """Rebuild a model written by `save`; a file of another kind fails with a clear message."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no reward model at {path}")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # not a torch file at all: pickle, EOF and zip errors differ by torch version
            data = None
        if not isinstance(data, dict) or data.get("format") != "robotrl-reward-ensemble/1":
            raise ValueError(f"{path} is not a robotrl reward model (written by RewardEnsemble.save)")
        model = cls(tuple(data["obs_shape"]), data["action_dim"], RewardModelConfig(**data["config"]),
                    data["discrete_actions"], data.get("component_dim", 0))
        state = data["state_dict"]
        state.setdefault("absorbing_logit", torch.zeros(model.size))  # files from before the absorbing offset
        if float(state.pop("out_mean", 0.0)) != 0.0:  # files from when output normalisation also shifted
            raise ValueError(f"{path} shifts its rewards (an older normalize_output); retrain it with this version")
        model.load_state_dict(state)
        return model.to(device)


class LearnedReward(RewardSource):
    """A reward source backed by a `RewardEnsemble` (no gradients; evaluated on the model's device)."""

    name = "learned"

    def __init__(self, model: RewardEnsemble) -> None:
        self.model = model
        self.needs = model.needs

    @torch.no_grad()
    def __call__(self, batch: Transitions) -> torch.Tensor:
        device = self.model.device
        return self.model({k: batch[k].to(device) for k in self.model.fields}).float()

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "model": self.model.config.model_dump()}


"""What every agent shares: its config base class, optimiser helpers and checkpoint state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class AgentConfig(BaseModel):
    """Fields common to all agents; each agent file subclasses this with its own hyper-parameters."""

    model_config = ConfigDict(extra="forbid")

    gamma: float = Field(0.99, gt=0.0, le=1.0, description="discount factor")
    hidden_sizes: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    activation: str = "relu"
    compile: bool = Field(False, description="torch.compile the hot path: PPO's minibatch loss (faster on CPU too); "
                          "SAC/TD3 networks (for GPUs; slower on a CPU, where their updates are matmul-bound)")


def adam(params: Any, lr: float, device: torch.device, eps: float = 1e-8) -> torch.optim.Adam:
    """Adam with the fused kernel where torch offers one for this device (same maths, fewer kernel launches)."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, eps=eps, fused=fused)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging target <- (1 - tau) * target + tau * source, in one fused call (outside autograd: the target
    stays a grad-free leaf instead of growing a graph with every update)."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def frozen(module: nn.Module):
    """Context manager that stops gradients into `module`'s parameters (used when a critic scores the actor)."""
    return _Frozen(module)


class _Frozen:
    def __init__(self, module: nn.Module) -> None:
        self.params = list(module.parameters())

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for p in self.params:
            p.requires_grad_(True)


class Agent(nn.Module, ABC):
    """Acts, updates, and saves/loads its full state (networks, optimisers, counters).

    Continuous actions live in [-1, 1]; discrete actions are one column holding the index (see `ActionAdapter`).
    """

    on_policy: bool = False
    action_spaces: tuple[str, ...] = ("continuous",)  # the action kinds it handles: "continuous" and/or "discrete"
    uses_reward_spec: bool = False  # True: the constructor takes `reward_spec` (agents learning per component)

    def __init__(self, obs_dim: int, action_dim: int, device: torch.device) -> None:
        super().__init__()
        self.obs_dim, self.action_dim, self.device = obs_dim, action_dim, device
        self.num_updates = 0

    @abstractmethod
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions in the stored format (see the class docstring) for a batch of raw observations."""

    def compiled(self, module: nn.Module) -> nn.Module:
        """`torch.compile(module)` when the config asks for it, else the module itself.

        Store the result with `object.__setattr__` (see `set_compiled`) so the compiled wrapper is not registered
        as a submodule: checkpoints then load whatever the compile flag of the loading run.
        """
        return torch.compile(module) if self.config.compile else module

    def compiled_fn(self, fn: Any) -> Any:
        """`torch.compile(fn)` when the config asks for it (e.g. a loss function), else `fn`."""
        return torch.compile(fn) if self.config.compile else fn

    def set_compiled(self, **modules: nn.Module) -> None:
        """Attach compiled (or plain) call paths as unregistered attributes, e.g. `_critic=self.critic`."""
        for name, module in modules.items():
            object.__setattr__(self, name, self.compiled(module))

    def reset_critic(self) -> None:
        """Re-initialise the critic, its target and its optimiser (PEBBLE does this once the reward is learned)."""
        critic = getattr(self, "critic", None)
        if critic is None:
            raise NotImplementedError(f"{type(self).__name__} has no critic to reset")
        for module in critic.modules():
            if hasattr(module, "reset_parameters") and module is not critic:
                module.reset_parameters()
        self.critic_target.load_state_dict(critic.state_dict())
        self.critic_opt = adam(critic.parameters(), self.config.critic_lr, self.device)

    def replay_sampling(self) -> dict[str, Any]:
        """Keyword arguments for `ReplayBuffer.sample` beyond the batch size (e.g. n-step returns); none by default."""
        return {}

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers, for checkpoints."""

    def full_state(self) -> dict[str, Any]:
        """Everything needed to continue training bit-for-bit."""
        return {
            "modules": self.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers().items()},
            "num_updates": self.num_updates,
        }

    def load_full_state(self, state: dict[str, Any]) -> None:
        """Restore what `full_state` returned."""
        self.load_state_dict(state["modules"])
        for name, opt in self.optimizers().items():
            opt.load_state_dict(state["optimizers"][name])
        self.num_updates = state["num_updates"]

"""`robotrl reward compare`: how far apart reward sources are, as STARC-VAL or EPIC distances estimated on
transitions of an env (`reward_learning.comparison_sampled`), printed as a table and drawn as a heatmap PNG.
`robotrl.cli` parses the arguments and calls `cmd_compare`.

Sources: `env` (the env reward); `components` (the env's declared weights) or `components:name=w,...` (signed weights
on the raw component values, as `reward.weights` in configs; components not named weigh 0); a saved reward model
`PATH.pt` (`RewardEnsemble.save`); a vision-language reward `vlm:CONFIG.yaml` (the config's `reward.vlm` section,
e.g. configs/mountaincar_vlm.yaml; frames are re-rendered from the simulator states recorded with the transitions);
generated reward code `code:FILE.py` (`reward_learning.sandbox`'s contract, run in the sandbox with the env's reward
components as named inputs, as `robotrl reward check` does); `negated:SOURCE` and `random` (a fixed random network of
obs and action) as sanity checks that should come out at distance 1 and far away. Transitions: steps of a uniformly
random policy in the env (default), a run's replay buffer (`--from-run RUN`), or fresh episodes of a run's policy
(`--from-run RUN --rollouts N`).

Only the sample-based methods run here (STARC-VAL with an L1, L2 or L-inf norm over the transitions, and EPIC);
DARD and the minimal-norm canonicalisation need next states of actions not taken and are tabular only
(`reward_learning.comparison`).
"""

from __future__ import annotations

import argparse
import math
import textwrap
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
from reward_learning import ComponentReward, EnvReward, RewardSource, Transitions
from reward_learning.comparison_sampled import RewardComparison, compare_rewards
from reward_learning.models import LearnedReward, RewardEnsemble
from robotrl import offline_queries as oq
from robotrl.core.buffers import ReplayBuffer
from robotrl.spaces import ActionAdapter

SOURCE_SYNTAX = ("env | components | components:name=w,... | negated:SOURCE | random | PATH.pt | vlm:CONFIG.yaml | "
                 "code:FILE.py")
TRANSITION_KEYS = ("obs", "action", "next_obs", "env_reward", "components", "terminated")
METHOD_NAMES = {"starc_val": "STARC-VAL", "epic": "EPIC"}


class NegatedReward(RewardSource):
    """−R of another source: the reward farthest from it (distance 1)."""

    name = "negated"

    def __init__(self, source: RewardSource) -> None:
        self.source = source
        self.needs = source.needs

    def __call__(self, batch: Transitions) -> torch.Tensor:
        return -self.source(batch)


class RandomReward(RewardSource):
    """A fixed random tanh network of (obs, action), seeded: a reward unrelated to the task, for sanity checks."""

    name = "random"
    needs = frozenset({"obs", "action"})

    def __init__(self, obs_dim: int, action_dim: int, seed: int, hidden: int = 64) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.hidden = torch.randn(obs_dim + action_dim, hidden, generator=generator) / math.sqrt(obs_dim + action_dim)
        self.head = torch.randn(hidden, generator=generator) / math.sqrt(hidden)

    def __call__(self, batch: Transitions) -> torch.Tensor:
        n = len(batch["obs"])
        x = torch.cat([batch["obs"].reshape(n, -1).float(), batch["action"].reshape(n, -1).float()], 1)
        return torch.tanh(x @ self.hidden.to(x.device)) @ self.head.to(x.device)


def parse_weights(text: str) -> dict[str, float]:
    """`name=w,name=w` -> {name: w}."""
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            weight = float(value) if sep and name.strip() else None
        except ValueError:
            weight = None
        if weight is None:
            raise ValueError(f"bad component weight '{item}': write name=weight, e.g. components:distance=-1")
        weights[name.strip()] = weight
    if not weights:
        raise ValueError("components: needs at least one name=weight (or plain `components` for the env's weights)")
    return weights


@dataclass
class Task:
    """What building reward sources needs to know about the env."""

    env_id: str
    kwargs: dict
    adapter: ActionAdapter
    component_names: list[str]
    obs_shape: tuple[int, ...]

    @classmethod
    def of(cls, env_id: str, kwargs: dict) -> Task:
        return cls(env_id, kwargs, *oq.task_layout(env_id, kwargs))


def parse_source(spec: str, task: Task, seed: int, device: torch.device, resources: ExitStack) -> RewardSource:
    """A reward source from its command-line spelling (see SOURCE_SYNTAX); `resources` closes what it starts (the
    sandbox of `code:`)."""
    if spec == "env":
        return EnvReward()
    if spec == "random":
        return RandomReward(int(np.prod(task.obs_shape)), task.adapter.stored_dim, seed)
    if spec.startswith("negated:"):
        return NegatedReward(parse_source(spec.removeprefix("negated:"), task, seed, device, resources))
    if spec == "components":
        declared = envs.reward_spec(task.env_id, **task.kwargs)
        return ComponentReward(task.component_names, {c.name: c.signed_weight for c in declared})
    if spec.startswith("components:"):
        return ComponentReward(task.component_names, parse_weights(spec.removeprefix("components:")))
    if spec.startswith("vlm:"):
        return vlm_source(Path(spec.removeprefix("vlm:")), task)
    if spec.startswith("code:"):
        return code_source(Path(spec.removeprefix("code:")), task, resources)
    if spec.endswith(".pt"):
        model = RewardEnsemble.load(spec, device)
        if model.obs_shape != task.obs_shape or model.action_dim != task.adapter.action_dim:
            raise ValueError(f"reward model {spec} takes observations {model.obs_shape} and {model.action_dim} "
                             f"action dims, but {task.env_id} has {task.obs_shape} and {task.adapter.action_dim}")
        return LearnedReward(model)
    raise ValueError(f"unknown reward source '{spec}': use {SOURCE_SYNTAX}")


def vlm_source(path: Path, task: Task) -> RewardSource:
    """The VLM reward that a config's `reward.vlm` section describes, for the task being compared."""
    from robotrl.config import load_config
    from robotrl.vlm_rewards import RenderedVLMReward, load_vlm

    config = load_config(path)
    if config.env.id != task.env_id:
        raise ValueError(f"vlm:{path} is for {config.env.id}, but the transitions are from {task.env_id}")
    if not config.reward.vlm.goal_prompts:
        raise ValueError(f"vlm:{path} has no reward.vlm.goal_prompts")
    return RenderedVLMReward(*load_vlm(config))


def code_source(path: Path, task: Task, resources: ExitStack) -> RewardSource:
    """Reward code from a file, checked and run in the sandbox with the task's reward components as named inputs; its
    worker process stops when `resources` closes."""
    from reward_learning.sandbox import RewardCodeError, SandboxedReward

    if not path.is_file():
        raise FileNotFoundError(f"code:{path}: no reward-code file there")
    try:
        return resources.enter_context(SandboxedReward.from_file(path, task.component_names))
    except RewardCodeError as err:
        raise ValueError(f"code:{path} was rejected: {err}") from None


def needs_states(specs: list[str]) -> bool:
    """Whether a source re-renders frames, so the transitions must carry simulator states."""
    return any(spec.removeprefix("negated:").startswith("vlm:") for spec in specs)


def random_policy_buffer(env_id: str, samples: int, episodes: int | None, seed: int,
                         states: bool = False, env_kwargs: Mapping[str, Any] | None = None) -> ReplayBuffer:
    """Steps of a uniformly random policy: `episodes` whole episodes, or else episodes until `samples` steps; with
    `states`, the simulator state after each step too. `env_kwargs` go to the env's constructor."""
    env = envs.make(env_id, render_mode=None, seed=seed, record_state=states, **(env_kwargs or {}))
    adapter = ActionAdapter.from_space(env.action_space)
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        return adapter.random(rng, 1)

    if episodes:
        return oq.rollout_buffer(env, act, adapter, episodes, seed, states=states)
    return oq.rollout_buffer(env, act, adapter, samples, seed, max_steps=samples, states=states)


def buffer_transitions(buffer: ReplayBuffer, samples: int, seed: int) -> dict[str, torch.Tensor]:
    """Up to `samples` stored transitions (a seeded uniform subset when the buffer holds more)."""
    index = buffer.chronological_indices()
    if len(index) > samples:
        keep = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[:samples]
        index = index[keep.sort().values]
    return {key: buffer.storage[key][index] for key in (*TRANSITION_KEYS, "state") if key in buffer.storage}


def load_transitions(args: argparse.Namespace) -> tuple[dict[str, torch.Tensor], str, dict, float, str]:
    """(transitions, env id, env kwargs, default γ, where the transitions came from) for the command's options."""
    from robotrl.cli import find_run

    if args.from_run is None:
        if args.env is None:
            raise ValueError("name the task with --env ENV_ID (or take transitions from a run with --from-run RUN)")
        buffer = random_policy_buffer(args.env, args.samples, args.rollouts, args.seed, needs_states(args.sources))
        origin = f"{args.rollouts} random-policy episodes" if args.rollouts else "random-policy steps"
        return buffer_transitions(buffer, args.samples, args.seed), args.env, {}, 0.99, origin
    run = find_run(args.from_run)
    if args.rollouts:
        config, buffer = oq.buffer_from_rollouts(run, args.rollouts, args.seed)
        origin = f"{args.rollouts} episodes of {run.name}'s policy"
    else:
        config, buffer, _ = oq.buffer_from_run(run, need_states=needs_states(args.sources))
        origin = f"{run.name}'s replay buffer"
    if args.env is not None and args.env != config.env.id:
        raise ValueError(f"--env {args.env} differs from the run's env {config.env.id}; leave --env out")
    transitions = buffer_transitions(buffer, args.samples, args.seed)
    return transitions, config.env.id, config.env.kwargs, config.algo.gamma, origin


def format_table(comparison: RewardComparison, title: str) -> str:
    """The distance matrix as aligned text, then the bootstrap interval of each pair when there are any."""
    names, d = comparison.names, comparison.distances
    width = max(6, *map(len, names))
    lines = [title, " " * width + "".join(f"  {name:>{width}}" for name in names)]
    lines += [f"{row:<{width}}" + "".join(f"  {d[i, j]:>{width}.3f}" for j in range(len(names)))
              for i, row in enumerate(names)]
    if comparison.lower is not None and comparison.upper is not None:
        lines += ["", f"{100 * comparison.confidence:g}% bootstrap intervals:"]
        lines += [f"  {names[i]} ~ {names[j]}: {d[i, j]:.3f} [{comparison.lower[i, j]:.3f}, "
                  f"{comparison.upper[i, j]:.3f}]" for i in range(len(names)) for j in range(i + 1, len(names))]
    return "\n".join(lines)


def write_heatmap(comparison: RewardComparison, path: Path, title: str) -> None:
    """A PNG heatmap of the distance matrix on a fixed [0, 1] colour scale, each cell labelled with its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, d = comparison.names, comparison.distances
    size = 2.0 + 0.9 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))  # savefig's tight bounding box makes room for long names
    image = ax.imshow(d, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{d[i, j]:.2f}", ha="center", va="center", color="white" if d[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, label=f"{METHOD_NAMES[comparison.method]} distance")
    ax.set_title(textwrap.fill(title, 90), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare the given reward sources on transitions of an env; print the distance table, write the heatmap."""
    from robotrl.core.device import resolve_device, set_torch_threads

    if len(set(args.sources)) != len(args.sources):
        raise ValueError(f"a reward source is given twice: {args.sources}")
    if args.gamma is not None and not 0.0 <= args.gamma < 1.0:
        raise ValueError(f"--gamma must be in [0, 1), got {args.gamma}")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 (no intervals) or more resamples, got {args.bootstrap}")
    if args.method == "epic" and args.norm != "l2":
        raise ValueError(f"--norm {args.norm} applies to starc_val only: EPIC is a Pearson distance")
    if args.method == "epic" and needs_states(args.sources):
        raise ValueError("EPIC scores transitions that never happened, which have no simulator state to render: "
                         "compare a vlm: source with --method starc_val")
    set_torch_threads(args.threads)
    device = resolve_device(args.device)
    transitions, env_id, env_kwargs, gamma, origin = load_transitions(args)
    gamma = gamma if args.gamma is None else args.gamma
    task = Task.of(env_id, env_kwargs)
    with ExitStack() as resources:
        sources = {spec: parse_source(spec, task, args.seed, device, resources) for spec in args.sources}
        comparison = compare_rewards(sources, transitions, args.method, gamma, bootstrap=args.bootstrap,
                                     device=str(device), seed=args.seed, n_mean_samples=args.mean_samples,
                                     norm=args.norm)
    title = (f"{METHOD_NAMES[args.method]} distances (0 = equivalent, 1 = opposite) on {comparison.samples} "
             f"transitions of {env_id} ({origin}), gamma {gamma:g}")
    print(format_table(comparison, title))
    out = Path(args.out)
    write_heatmap(comparison, out, title)
    print(f"heatmap: {out}")
    return 0

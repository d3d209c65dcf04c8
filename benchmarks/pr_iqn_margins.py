"""Why does Pr-IQN crash more than scalarised IQN on highway-fast? Diagnostics of trained Pr-IQN runs, no training.

For each run (a `configs/highway_fast_pr_iqn.yaml` run directory, e.g. of benchmarks/highway_distributional.py):

1. The trained networks act with other dominance settings (`quantile_margin`, and the tau grid's `cvar_alpha`):
   collision rate, mean speed and success over deterministic evaluation episodes (the seeds the trainer evaluates on).
   Only action selection changes; the networks were trained with the config's own rule.
2. At the config's own setting, per visited state: how many of the actions survive the collision group, how far
   apart the actions' mean collision returns are (max - min over actions), and whether the chosen action is the one
   with the best collision mean; separately for the last steps before a crash.

    python benchmarks/pr_iqn_margins.py RUN [RUN ...] --episodes 20 --margins 0 0.01 0.05 0.1

Prints markdown tables (mean +- std over runs) and writes them with the raw numbers to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.agents.pr_iqn import PrIQN
from robotrl.core.preorder import optimal_subset
from robotrl.core.quantile import midpoint_taus
from robotrl.evaluation import make_eval_env
from robotrl.policy import Policy, load_policy

EVAL_SEED_OFFSET = 1_000_000  # the trainer evaluates on seed + 1e6 + episode
BEFORE_CRASH = 3  # steps before a crash counted as "near a crash"


def with_setting(agent: PrIQN, **update: float) -> None:
    """Switch the agent's action-selection rule in place (the grid follows cvar_alpha)."""
    agent.config = agent.config.model_copy(update=update)
    agent.grid = agent.config.cvar_alpha * midpoint_taus(agent.config.num_policy_samples, agent.grid.device)


def outcome(policy: Policy, episodes: int) -> dict[str, float]:
    """Collision rate, mean speed, success rate and return of deterministic evaluation episodes."""
    summary = policy.evaluate(episodes, seed=policy.config.seed + EVAL_SEED_OFFSET).summary()
    return {"collision rate": summary["eval/components/collision"],
            "mean speed": summary["eval/components_per_step/speed"],
            "success rate": summary.get("eval/success_rate", float("nan")), "return": summary["eval/return"]}


@torch.no_grad()
def state_diagnostics(policy: Policy, episodes: int) -> dict[str, float]:
    """Per visited state, at the run's own setting: survivors of the collision group, the spread of the actions'
    mean collision returns, and whether the chosen action has the best collision mean; overall and near crashes."""
    agent, config = policy.agent, policy.config
    assert isinstance(agent, PrIQN)
    collision = agent.groups[0]
    env = make_eval_env(config.env.id, config.env.kwargs, False, 0, 0, None, config.env.max_episode_steps)
    rows: list[tuple[int, float, bool, bool]] = []  # survivors, spread, chosen is collision-best, near a crash
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=config.seed + EVAL_SEED_OFFSET + episode)
            episode_rows = []
            done, crashed = False, False
            while not done:
                obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=policy.device)[None]
                z = agent.quantiles(agent.net, obs_t, agent.grid)  # [1, K, C, A]
                survivors = optimal_subset(z, [collision], agent.config.dominance_epsilon,
                                           agent.config.quantile_margin)[0]
                collision_means = z[0, :, collision].mean(0).sum(0)  # [A]: objective = -collision, higher is safer
                action = int(agent.greedy_action(agent.net, obs_t)[0])
                episode_rows.append((int(survivors.sum()), float(collision_means.max() - collision_means.min()),
                                     bool(collision_means[action] >= collision_means.max() - 1e-6)))
                obs, _, terminated, truncated, info = env.step(policy.adapter.to_env(np.array([float(action)])))
                crashed = crashed or info["reward_components"]["collision"] > 0
                done = terminated or truncated
            near = len(episode_rows) - BEFORE_CRASH if crashed else len(episode_rows)
            rows += [(*row, i >= near) for i, row in enumerate(episode_rows)]
    finally:
        env.close()
    survivors, spread, best, near = (np.array(column) for column in zip(*rows, strict=True))
    num_actions = agent.action_dim
    out = {"states": len(rows), "survivors of the collision group": survivors.mean(),
           "share of states where it keeps every action": (survivors == num_actions).mean(),
           "collision-mean spread, median": np.median(spread),
           "chosen action has the best collision mean": best.mean()}
    if near.any():
        out.update({"near a crash: survivors": survivors[near].mean(),
                    "near a crash: spread, median": np.median(spread[near]),
                    "near a crash: chosen is collision-best": best[near].mean()})
    return {k: float(v) for k, v in out.items()}


def table(rows: dict[str, list[dict[str, float]]], columns: list[str]) -> str:
    """Markdown: one row per setting, each column mean +- std over runs."""
    lines = ["| setting | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, runs in rows.items():
        cells = []
        for column in columns:
            values = np.array([run[column] for run in runs if column in run])
            cells.append(f"{values.mean():.2f} ± {values.std():.2f}" if len(values) else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="Pr-IQN run directories")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.01, 0.05, 0.1])
    parser.add_argument("--cvar", type=float, nargs="*", default=[0.25], help="cvar_alpha settings to try (at the "
                        "run's own margin)")
    parser.add_argument("--out", default="benchmarks/results/pr_iqn_margins.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings: dict[str, list[dict[str, float]]] = {}
    diagnostics: list[dict[str, float]] = []
    for run in args.runs:
        policy = load_policy(run, device="cpu")
        agent = policy.agent
        if not isinstance(agent, PrIQN):
            raise SystemExit(f"{run} is a {policy.config.algo.name} run, not pr_iqn")
        own = agent.config.model_copy()
        diagnostics.append(state_diagnostics(policy, args.episodes))
        for margin in args.margins:
            with_setting(agent, quantile_margin=margin, cvar_alpha=own.cvar_alpha)
            label = f"margin {margin:g}" + (" (trained)" if margin == own.quantile_margin else "")
            settings.setdefault(label, []).append(outcome(policy, args.episodes))
        for alpha in args.cvar:
            with_setting(agent, quantile_margin=own.quantile_margin, cvar_alpha=alpha)
            settings.setdefault(f"margin {own.quantile_margin:g}, CVaR {alpha:g}", []).append(
                outcome(policy, args.episodes))
        print(f"{run}: done", flush=True)
    outcome_table = table(settings, ["collision rate", "mean speed", "success rate", "return"])
    diagnostic_rows = {"own setting": diagnostics}
    diagnostic_table = table(diagnostic_rows, list(diagnostics[0]))
    print(outcome_table, "", diagnostic_table, sep="\n")
    result: dict[str, Any] = {"runs": args.runs, "episodes": args.episodes, "settings": settings,
                              "diagnostics": diagnostics}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

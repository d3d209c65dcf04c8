"""Pr-IQN against scalarised IQN and ensemble IQN on highway-fast (discrete meta-actions), N seeds each.

Three configs that differ only in the agent, each run a `robotrl train` subprocess (a killed sweep resumes: finished
runs are skipped, the others continue from their last checkpoint; see preference_benchmarks.py):
    iqn           configs/highway_fast_iqn.yaml: IQN on the env reward (the weighted sum of the components)
    ensemble_iqn  configs/highway_fast_ensemble_iqn.yaml: 5 IQN networks on the env reward, acting on their mean
    pr_iqn        configs/highway_fast_pr_iqn.yaml: one quantile head per component, preorder
                  collision > speed > {right_lane, lane_centering, on_road, action_change}

    # 3 seeds x 3 agents at 15k steps: ~11 (iqn), ~17 (pr_iqn), ~21 (ensemble_iqn) min per run on a loaded core
    nice -n 5 python benchmarks/highway_distributional.py --seeds 3 --jobs 2
    # a quick end-to-end check
    python benchmarks/highway_distributional.py --seeds 1 --runs-dir /tmp/bench-hw train.total_steps=400 \\
        train.eval_every=200 train.eval_episodes=2 algo.learning_starts=100

Writes <results-dir>/highway_distributional.json (these metrics per run), .md (the table) and optionally .png, keeps
the sweep's own per-run record (final return, wall time) in highway_distributional_runs.json, and prints the markdown
table: per agent, mean +- std over seeds of the collision rate (share of evaluation episodes that end in a crash), the
mean speed (the speed component per step: the lane speed mapped from [20, 30] m/s to [0, 1]), the success rate (no
crash, on the road, at the time limit) and the env return, each the mean of the last 3 evaluations of a run
(10 deterministic episodes each with the shipped configs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from preference_benchmarks import (
    LAST_EVALS,
    Job,
    Sweep,
    add_sweep_arguments,
    check_sweep_arguments,
    command_line,
    eval_series,
    json_safe,
    make_job,
    print_dry_run,
    pyplot,
    read_run,
    run_finished,
    tail_mean,
)

CONFIGS = {name: Path(f"configs/highway_fast_{name}.yaml") for name in ("iqn", "ensemble_iqn", "pr_iqn")}
METRICS = {  # column -> eval metric logged by robotrl.evaluation
    "collision rate": "eval/components/collision",
    "mean speed": "eval/components_per_step/speed",
    "success rate": "eval/success_rate",
    "return": "eval/return",
}
RESERVED = ("seed", "algo.name")
STEM = "highway_distributional"


class HighwaySweep(Sweep):
    """`Sweep` whose variants are separate configs (the preference sweeps vary overrides of one config)."""

    def next_step(self, job: Job) -> tuple[str, list[str]]:
        state, cmd = super().next_step(job)
        if state != "new":
            return state, cmd
        return state, [*self.robotrl, "train", str(CONFIGS[job.variant]), "--run-dir", str(job.run_dir),
                       "--no-progress", *job.overrides]


def plan(args: argparse.Namespace) -> list[Job]:
    """One job per agent and seed; an existing run directory must have been started with the same settings."""
    return [make_job(name, seed, config, [f"seed={seed}", *args.overrides], Path(args.runs_dir) / f"{name}-s{seed}")
            for seed in range(args.first_seed, args.first_seed + args.seeds) for name, config in CONFIGS.items()]


def summarize(job: Job) -> dict[str, Any]:
    """The table's metrics for one finished run: each the mean of its last evaluations."""
    _, records = read_run(job.run_dir)
    steps, _ = eval_series(records)
    out: dict[str, Any] = {"agent": job.variant, "seed": job.seed, "run_dir": str(job.run_dir),
                           "final_step": int(steps[-1]) if len(steps) else None}
    for column, metric in METRICS.items():
        out[column] = tail_mean(eval_series(records, metric)[1])
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per agent, mean +- std over seeds of each metric."""
    lines = [f"| agent | seeds | steps | {' | '.join(METRICS)} |", "|---|---|---|" + "---|" * len(METRICS)]
    for name in CONFIGS:
        runs = [r for r in rows if r["agent"] == name]
        if not runs:
            continue
        cells = []
        for column in METRICS:
            values = np.array([r[column] for r in runs], dtype=np.float64)
            values = values[np.isfinite(values)]
            cells.append(f"{values.mean():.2f} ± {values.std():.2f}" if len(values) else "n/a")
        steps = "/".join(sorted({str(r["final_step"]) for r in runs}))
        lines.append(f"| {name} | {len(runs)} | {steps} | {' | '.join(cells)} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """One panel per metric: the mean over seeds as a bar, each seed as a dot."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 4))
    names = [name for name in CONFIGS if any(r["agent"] == name for r in rows)]
    for ax, column in zip(axes, METRICS, strict=True):
        for i, name in enumerate(names):
            values = [r[column] for r in rows if r["agent"] == name and np.isfinite(r[column])]
            ax.bar(i, np.mean(values) if values else 0.0, color=f"C{i}", alpha=0.7)
            ax.scatter([i] * len(values), values, color="black", s=10, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(column)
    fig.suptitle(f"highway-fast: mean of the last {LAST_EVALS} evaluations per run (bars: mean over seeds)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_arguments(parser, "runs/bench-highway-distributional", f"where {STEM}.json/.md/.png go",
                        seeds_default=3)
    parser.add_argument("--plot", action="store_true", help=f"also write {STEM}.png (bars per metric)")
    args = parser.parse_args(argv)
    check_sweep_arguments(parser, args, RESERVED)
    print(f"$ {command_line()}\n", flush=True)
    results = Path(args.results_dir)
    jobs = plan(args)
    sweep = HighwaySweep(argparse.Namespace(**vars(args), config=", ".join(map(str, CONFIGS.values())),
                                            out=results / f"{STEM}_runs.json"), jobs)
    print(f"{len(jobs)} runs, {args.jobs} at a time, in {args.runs_dir}", flush=True)
    if args.dry_run:
        print_dry_run(sweep, jobs)
        return 0
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    code = sweep.run()
    if code == 130:  # interrupted: rerun the same command to resume
        return code
    rows = [summarize(job) for job in jobs if run_finished(job.run_dir)]
    if not rows:
        return code or 1
    markdown = table(rows)
    print(f"\nmean ± std over seeds; each run: mean of its last {LAST_EVALS} evaluations\n\n{markdown}")
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{STEM}.json").write_text(json.dumps(json_safe({"command": command_line(), "runs": rows}), indent=1))
    (results / f"{STEM}.md").write_text(f"$ {command_line()}\n\n{markdown}\n")
    if args.plot:
        plot(rows, results / f"{STEM}.png")
        print(f"\nplot: {results / f'{STEM}.png'}")
    return code


if __name__ == "__main__":
    sys.exit(main())

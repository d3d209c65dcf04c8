"""HERON against flat preference learning and against SAC on the engineered env reward: same agent, same label
budget, N seeds, per task.

Three variants of `configs/<task>_heron.yaml`, each a `robotrl train` subprocess (a killed sweep resumes: finished
runs are skipped, the others continue from their last checkpoint; see preference_benchmarks.py):
    heron  the config as is: labels from HERON's decision tree over the ranked reward components
    flat   reward.preference.teacher=oracle reward.preference.heron=null: labels from the env reward, the weighted
           sum of the same components (the paper's flat "RLHF" baseline labels by a sum of the factors too)
    sac    reward.source=env: SAC on the engineered env reward, no labels

    # Pendulum, 3 seeds, 6k steps (about 15 minutes on one core)
    nice -n 5 python benchmarks/heron_benchmarks.py --tasks pendulum --seeds 3 train.total_steps=6000
    # HalfCheetah, 200k steps x 3 seeds x 3 variants: about 45-60 min per run at ~70 steps/s, so 7-9 hours of
    # one core; two runs at a time on two free cores
    nice -n 5 python benchmarks/heron_benchmarks.py --tasks halfcheetah --seeds 3 --jobs 2

Writes benchmarks/results/heron_<task>.json and heron_<task>.png (final returns per variant and learning curves) and
prints a markdown table per task: final return on the true reward = mean of the last 3 evaluations, median, min
and max over seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from preference_benchmarks import (
    Job,
    Sweep,
    add_sweep_arguments,
    check_sweep_arguments,
    command_line,
    make_job,
    print_dry_run,
    report,
    run_finished,
    summarize_run,
)

TASKS = ("pendulum", "mountaincar", "halfcheetah", "hopper", "ant")
VARIANTS = {
    "heron": [],
    "flat": ["reward.preference.teacher=oracle", "reward.preference.heron=null"],
    "sac": ["reward.source=env"],
}
RESERVED = ("seed", "reward.source", "reward.preference.teacher", "reward.preference.heron",
            "reward.preference.budget")


def plan(task: str, config: Path, args: argparse.Namespace) -> list[Job]:
    """One job per variant and seed; an existing run directory must have been started with the same settings."""
    jobs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name, variant in VARIANTS.items():
            budget = [] if args.budget is None else [f"reward.preference.budget={args.budget}"]
            overrides = [f"seed={seed}", *budget, *variant, *args.overrides]
            jobs.append(make_job(name, seed, config, overrides, Path(args.runs_dir) / task / f"{name}-s{seed}",
                                 strict=not args.report_only))
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, required=True, help="configs/<task>_heron.yaml each")
    add_sweep_arguments(parser, "runs/bench-heron", "where heron_<task>.json/.png go")
    parser.add_argument("--budget", type=int, default=None, help="reward.preference.budget for heron and flat "
                        "(default: the config's)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the finished runs found in --runs-dir/<task>/<variant>-s<seed> "
                        "(e.g. runs trained elsewhere; differences from the sweep's settings are printed)")
    args = parser.parse_args(argv)
    check_sweep_arguments(parser, args, RESERVED)
    print(f"$ {command_line()}\n", flush=True)
    code = 0
    for task in args.tasks:
        config = Path(f"configs/{task}_heron.yaml")
        out = Path(args.results_dir) / f"heron_{task}.json"
        jobs = plan(task, config, args)
        sweep = Sweep(argparse.Namespace(**vars(args), config=config, out=out), jobs)
        print(f"{task}: {len(jobs)} runs, {args.jobs} at a time, in {Path(args.runs_dir) / task}; results -> {out}",
              flush=True)
        if args.dry_run:
            print_dry_run(sweep, jobs)
            continue
        if args.report_only:
            for job in jobs:
                if run_finished(job.run_dir):
                    sweep.record(job, summarize_run(job.run_dir))
                else:
                    print(f"{job.variant}-s{job.seed}: not finished ({job.run_dir}), left out", flush=True)
            if out.exists():
                report(out, out.with_suffix(".png"), order=list(VARIANTS))
            continue
        (Path(args.runs_dir) / task).mkdir(parents=True, exist_ok=True)
        code = sweep.run() or code
        if code == 130:  # interrupted: rerun the same command to resume
            return code
        if out.exists():
            print()
            report(out, out.with_suffix(".png"), order=list(VARIANTS))
    return code


if __name__ == "__main__":
    sys.exit(main())

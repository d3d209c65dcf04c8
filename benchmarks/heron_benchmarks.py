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

import yaml
from preference_benchmarks import Job, Sweep, command_line, config_differences, report

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
    from robotrl.config import ConfigError, dump_config, load_config

    jobs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name, variant in VARIANTS.items():
            budget = [] if args.budget is None else [f"reward.preference.budget={args.budget}"]
            overrides = [f"seed={seed}", *budget, *variant, *args.overrides]
            try:
                resolved = yaml.safe_load(dump_config(load_config(config, overrides)))
            except ConfigError as err:
                raise SystemExit(f"error: {err}") from None
            run_dir = Path(args.runs_dir) / task / f"{name}-s{seed}"
            saved = run_dir / "config.yaml"
            diffs = config_differences(resolved, yaml.safe_load(saved.read_text())) if saved.exists() else []
            if diffs:
                raise SystemExit(f"error: {run_dir} was started with other settings:\n  " + "\n  ".join(diffs)
                                 + "\nuse another --runs-dir, or delete that run")
            jobs.append(Job(name, seed, run_dir, overrides, resolved))
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, required=True, help="configs/<task>_heron.yaml each")
    parser.add_argument("--seeds", type=int, required=True, help="number of seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed+seeds-1")
    parser.add_argument("--budget", type=int, default=None, help="reward.preference.budget for heron and flat "
                        "(default: the config's)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (default 1)")
    parser.add_argument("--runs-dir", default="runs/bench-heron", help="parent of <task>/<variant>-s<seed>")
    parser.add_argument("--results-dir", default="benchmarks/results", help="where heron_<task>.json/.png go")
    parser.add_argument("--dry-run", action="store_true", help="print each run's state and command, train nothing")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides for every run, e.g. "
                        "train.total_steps=6000")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    clash = [o for o in args.overrides if o.split("=", 1)[0].strip() in RESERVED]
    if clash:
        parser.error(f"{clash} would change what the benchmark itself sets ({', '.join(RESERVED)})")
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
            for job in jobs:
                state, cmd = sweep.next_step(job)
                print(f"  {job.variant}-s{job.seed}: {state} {' '.join(cmd)}")
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

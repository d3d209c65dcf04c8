"""Preference-learning benchmarks: B-Pref teacher and query-sampler sweeps, label efficiency against SAC on the true
reward, and the speed of relabelling a replay buffer with a learned reward ensemble.

Every training run is a `robotrl train` subprocess writing its own run directory, so a killed sweep loses nothing:
rerunning the same command skips finished runs and resumes the others from their last checkpoint.

    # B-Pref teachers (oracle, noisy, mistake, skip, myopic, equal) x 3 seeds, two runs at a time
    python benchmarks/preference_benchmarks.py sweep --config configs/halfcheetah_pebble.yaml --variants teachers \\
        --seeds 3 --jobs 2 --runs-dir runs/bench-hc-pebble --out benchmarks/results/hc_pebble_teachers.json
    python benchmarks/preference_benchmarks.py report benchmarks/results/hc_pebble_teachers.json --plot teachers.png

    # PEBBLE (oracle teacher, 1,000 labels) against SAC on the true reward, matched by seed
    python benchmarks/preference_benchmarks.py efficiency --pebble runs/bench-hc-pebble/teacher-oracle-s* \\
        --sac runs/hc-sac-s0 runs/hc-sac-s1 runs/hc-sac-s2 --plot efficiency.png

    # relabelling 1M HalfCheetah transitions: our batched ensemble vs a B-Pref-style loop over member MLPs
    python benchmarks/preference_benchmarks.py relabel --transitions 1000000 --threads 1
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

TEACHERS = ("oracle", "noisy", "mistake", "skip", "myopic", "equal")
SAMPLERS = ("uniform", "disagreement", "entropy")
DEFAULT_RELABEL_CHUNK = 2048  # ReplayBuffer.relabel's default chunk_size on a CPU
LAST_EVALS = 3  # the final return is the mean of this many last eval/return records
RUN_ARTIFACTS = {"config.yaml", "metrics.jsonl", "checkpoint.pt", "labels.sqlite", "labels.sqlite-journal",
                 "labels.sqlite-wal", "labels.sqlite-shm", "reward_model.pt", "reward_model.pt.tmp", "tb", "wandb"}


def command_line() -> str:
    """The command that produced this output, as a user would type it."""
    return "python " + shlex.join(sys.argv)


def fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


# ------------------------------------------------------------------------------------------------ run directories
def eval_series(records: list[dict[str, Any]], metric: str = "eval/return") -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `metric`, one value per step (the last one logged there), in step order."""
    by_step = {int(r["step"]): float(r[metric]) for r in records if metric in r}
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def tail_mean(values: Sequence[float] | np.ndarray, count: int = LAST_EVALS) -> float:
    """Mean of the last `count` values (nan when there are none)."""
    values = list(values)[-count:]
    return float(np.mean(values)) if values else float("nan")


def last_value(records: list[dict[str, Any]], metric: str) -> float:
    """The last logged value of `metric` (nan if never logged)."""
    for record in reversed(records):
        if metric in record:
            return float(record[metric])
    return float("nan")


def active_wall_time(records: list[dict[str, Any]]) -> float:
    """Seconds of training behind the kept records: the logger's clock restarts at 0 on every resume, so sum the
    last `wall_time` of each segment (work lost after the last checkpoint before a kill is not counted)."""
    total, last = 0.0, 0.0
    for record in records:
        wall = float(record.get("wall_time", 0.0))
        if wall < last:
            total += last
        last = wall
    return total + last


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(resolved config, metrics records) of a run directory."""
    from robotrl.logger import read_metrics

    config_path, metrics_path = run_dir / "config.yaml", run_dir / "metrics.jsonl"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    config = yaml.safe_load(config_path.read_text())
    return config, read_metrics(metrics_path) if metrics_path.exists() else []


def run_finished(run_dir: Path) -> bool:
    """True when metrics.jsonl holds an evaluation at (or past) the run's `train.total_steps`.

    The trainer always logs an evaluation at the last step before it writes its final checkpoint, so this is what
    the results need; a kill between the two writes costs at most the final checkpoint.
    """
    if not (run_dir / "config.yaml").exists() or not (run_dir / "metrics.jsonl").exists():
        return False
    config, records = read_run(run_dir)
    steps, _ = eval_series(records)
    return len(steps) > 0 and int(steps[-1]) >= int(config["train"]["total_steps"])


def summarize_run(run_dir: Path, upto_step: int | None = None) -> dict[str, Any]:
    """Final return (mean of the last 3 evals, and the last), reward-quality diagnostics, labels and timings.

    With `upto_step`, returns are taken from evaluations at or before that step (timings stay at the end).
    """
    config, records = read_run(run_dir)
    steps, returns = eval_series(records)
    if upto_step is not None:
        keep = steps <= upto_step
        steps, returns = steps[keep], returns[keep]
    pref = config.get("reward", {}).get("preference", {})
    learned = config.get("reward", {}).get("source") == "preference"
    _, acc = eval_series(records, "reward/true_pref_accuracy")
    _, corr = eval_series(records, "reward/return_correlation")
    wall = active_wall_time(records)
    reward_s, relabel_s = last_value(records, "time/reward_learning_s"), last_value(records, "time/relabel_s")
    cost = np.nansum([reward_s, relabel_s]) if learned else float("nan")
    return {
        "run_dir": str(run_dir), "seed": int(config.get("seed", 0)), "env": config["env"]["id"],
        "algo": config["algo"]["name"], "reward_source": config.get("reward", {}).get("source", "env"),
        "teacher": pref.get("teacher") if learned else None, "sampler": pref.get("sampler") if learned else None,
        "budget": pref.get("budget") if learned else None, "total_steps": int(config["train"]["total_steps"]),
        "final_step": int(steps[-1]) if len(steps) else None,
        "final_return": tail_mean(returns), "final_return_last": float(returns[-1]) if len(returns) else float("nan"),
        "eval_steps_averaged": [int(s) for s in steps[-LAST_EVALS:]],
        "true_pref_accuracy": tail_mean(acc), "return_correlation": tail_mean(corr),
        "queries": last_value(records, "reward/queries"), "labels": last_value(records, "reward/labels"),
        "skipped": last_value(records, "reward/skipped"), "equal": last_value(records, "reward/equal"),
        "wall_time_s": wall, "reward_learning_s": reward_s, "relabel_s": relabel_s,
        "reward_cost_share": cost / wall if learned and wall > 0 else float("nan"),
    }


def json_safe(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def num(value: Any) -> float:
    """JSON null -> nan."""
    return float("nan") if value is None else float(value)


def median_of(records: Sequence[dict[str, Any]], key: str) -> float:
    """Median of `key` over records, ignoring missing values (nan if none has it)."""
    values = [num(r.get(key)) for r in records]
    values = [v for v in values if np.isfinite(v)]
    return float(statistics.median(values)) if values else float("nan")


# ---------------------------------------------------------------------------------------------------------- sweep
@dataclass
class Variant:
    name: str
    overrides: list[str]
    knobs: tuple[str, ...]  # config keys the variant sets (extra overrides may not change them)


def make_variants(kind: str) -> list[Variant]:
    teachers = [Variant(f"teacher-{t}", [f"reward.preference.teacher={t}"], ("reward.preference.teacher",))
                for t in TEACHERS]
    samplers = [Variant(f"sampler-{s}", [f"reward.preference.sampler={s}", "reward.preference.teacher=oracle"],
                        ("reward.preference.sampler", "reward.preference.teacher")) for s in SAMPLERS]
    return {"teachers": teachers, "samplers": samplers, "both": teachers + samplers}[kind]


@dataclass
class Job:
    """One training run; `aliases` are other variants whose resolved config is identical (run once, reported twice)."""

    variant: str
    seed: int
    run_dir: Path
    overrides: list[str]
    resolved: dict[str, Any]
    aliases: list[str] = field(default_factory=list)


class Sweep:
    """Runs jobs in `robotrl train` / `robotrl resume` subprocesses, `jobs` at a time, forwarding SIGINT/SIGTERM."""

    def __init__(self, args: argparse.Namespace, jobs: list[Job]) -> None:
        self.args, self.jobs = args, jobs
        self.out = Path(args.out)
        self.lock = threading.Lock()
        self.live: set[subprocess.Popen] = set()
        self.stopping = False
        self.failures = 0
        exe = Path(sys.executable).with_name("robotrl")
        self.robotrl = [str(exe)] if exe.exists() else [sys.executable, "-m", "robotrl.cli"]

    # ------------------------------------------------------------------------------------------------ signals
    def stop(self, signum: int, _frame: Any) -> None:
        """First signal: let running trainers checkpoint (SIGTERM) and start nothing new."""
        if self.stopping:
            return
        self.stopping = True
        print(f"\n{signal.Signals(signum).name}: asking {len(self.live)} running trainer(s) to checkpoint and stop; "
              "rerun the same command to resume", flush=True)
        with self.lock:
            for proc in self.live:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    # ---------------------------------------------------------------------------------------------------- run
    def run(self) -> int:
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=self.args.jobs) as pool:
                futures = [pool.submit(self.run_job, job) for job in self.jobs]
                for future in concurrent.futures.as_completed(futures):
                    future.result()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return 130 if self.stopping else (1 if self.failures else 0)

    def run_job(self, job: Job) -> None:
        if self.stopping:
            return
        lock = job.run_dir.with_name(job.run_dir.name + ".lock")
        if not acquire_lock(lock):
            with self.lock:
                self.failures += 1
            self.report_line(job, None, f"busy: skipped, processes {lock_pids(lock)} are training it ({lock})")
            return
        started = time.perf_counter()
        try:
            try:
                status = self.train(job, lock)
            except (OSError, RuntimeError, ValueError) as err:  # e.g. a run dir we refuse to clear
                status = f"FAILED: {err}"
            if status in ("finished", "skipped: finished earlier"):
                summary = summarize_run(job.run_dir)
                summary["process_seconds"] = time.perf_counter() - started
                self.record(job, summary)
                self.report_line(job, summary, status)
            else:
                with self.lock:
                    self.failures += status != "interrupted"
                self.report_line(job, None, status)
        finally:
            lock.unlink(missing_ok=True)

    def train(self, job: Job, lock: Path) -> str:
        """Bring one run to completion; returns a status word for the progress line."""
        run_dir = job.run_dir
        state, cmd = self.next_step(job)
        if state == "finished":
            return "skipped: finished earlier"
        if state == "new":
            clear_partial_run(run_dir)
        log = run_dir.with_name(run_dir.name + ".log")
        with log.open("a") as handle:
            handle.write(f"\n$ {shlex.join(cmd)}\n")
            handle.flush()
            with self.lock:
                if self.stopping:
                    return "interrupted"
                proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
                self.live.add(proc)
            lock.write_text(f"{os.getpid()} {proc.pid}")
            code = proc.wait()
            with self.lock:
                self.live.discard(proc)
        if self.stopping:
            return "interrupted"
        if code != 0 or not run_finished(run_dir):
            tail = log.read_text().strip().splitlines()[-5:]
            return f"FAILED (exit {code}, log {log}):\n    " + "\n    ".join(tail)
        return "finished"

    def next_step(self, job: Job) -> tuple[str, list[str]]:
        """("finished" | "resume" | "new", the command that moves the run on)."""
        if run_finished(job.run_dir):
            return "finished", []
        if (job.run_dir / "checkpoint.pt").exists():
            return "resume", [*self.robotrl, "resume", str(job.run_dir), "--no-progress"]
        return "new", [*self.robotrl, "train", str(self.args.config), "--run-dir", str(job.run_dir), "--no-progress",
                       *job.overrides]

    # ------------------------------------------------------------------------------------------------ results
    def record(self, job: Job, summary: dict[str, Any]) -> None:
        """Merge this run (and its aliases) into the results file, replacing older records of the same run."""
        with self.lock:
            data = load_results(self.out) if self.out.exists() else {"runs": []}
            data.setdefault("commands", [])
            if command_line() not in data["commands"]:
                data["commands"].append(command_line())
            names = [job.variant, *job.aliases]
            data["runs"] = [r for r in data["runs"] if not (r["variant"] in names and r["seed"] == job.seed)]
            for name in names:
                shared = [n for n in names if n != name]
                data["runs"].append(json_safe({"variant": name, **summary, "seed": job.seed, "shared_with": shared,
                                               "config": str(self.args.config), "overrides": job.overrides}))
            self.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.out)

    def report_line(self, job: Job, summary: dict[str, Any] | None, status: str) -> None:
        name = "/".join([job.variant, *job.aliases])
        with self.lock:
            if summary is None:
                print(f"{name:24s} seed {job.seed}: {status}", flush=True)
            else:
                print(f"{name:24s} seed {job.seed}: final eval {fmt(summary['final_return'], 1)} "
                      f"(last {fmt(summary['final_return_last'], 1)} at step {summary['final_step']}), "
                      f"wall {summary['wall_time_s'] / 60:.1f} min  [{status}]", flush=True)


def add_sweep_arguments(parser: argparse.ArgumentParser, runs_dir: str, results_help: str,
                        seeds_default: int | None = None) -> None:
    """The options every sweep script shares: seeds, parallel jobs, where runs and results go, dry run, overrides."""
    parser.add_argument("--seeds", type=int, default=seeds_default, required=seeds_default is None,
                        help="number of seeds" + (f" (default {seeds_default})" if seeds_default else ""))
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed+seeds-1")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (default 1)")
    parser.add_argument("--runs-dir", default=runs_dir, help="parent of the run directories")
    parser.add_argument("--results-dir", default="benchmarks/results", help=results_help)
    parser.add_argument("--dry-run", action="store_true", help="print each run's state and command, train nothing")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides for every run, e.g. "
                        "train.total_steps=6000")


def check_sweep_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, reserved: Sequence[str]) -> None:
    """Reject impossible counts and overrides of keys the benchmark itself sets."""
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    clash = [o for o in args.overrides if o.split("=", 1)[0].strip() in reserved]
    if clash:
        parser.error(f"{clash} would change what the benchmark itself sets ({', '.join(reserved)})")


def make_job(name: str, seed: int, config: Path, overrides: list[str], run_dir: Path, strict: bool = True) -> Job:
    """A job for `config` with `overrides`; an existing run directory must have been started with the same settings
    (with `strict=False`, e.g. to report runs trained elsewhere, the differences are printed instead)."""
    from robotrl.config import ConfigError, dump_config, load_config

    try:
        resolved = yaml.safe_load(dump_config(load_config(config, overrides)))
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    saved = run_dir / "config.yaml"
    diffs = config_differences(resolved, yaml.safe_load(saved.read_text())) if saved.exists() else []
    if diffs and strict:
        raise SystemExit(f"error: {run_dir} was started with other settings:\n  " + "\n  ".join(diffs)
                         + "\nuse another --runs-dir, or delete that run")
    if diffs:
        print(f"note: {run_dir} differs from the sweep's settings:\n  " + "\n  ".join(diffs), flush=True)
    return Job(name, seed, run_dir, overrides, resolved)


def print_dry_run(sweep: Sweep, jobs: Sequence[Job]) -> None:
    """Each run's state (new, resume, finished) and the command the sweep would run."""
    for job in jobs:
        state, cmd = sweep.next_step(job)
        print(f"  {job.variant}-s{job.seed}: {state} {' '.join(cmd)}")


def acquire_lock(path: Path) -> bool:
    """Create `path` holding our pid (and later the trainer's); a lock whose processes are all gone is taken over.

    Trainers run in their own session, so one outlives a sweep killed with SIGKILL; its pid keeps the lock."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if any(pid_alive(pid) for pid in lock_pids(path)):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return True
    return False


def lock_pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in path.read_text().split() if p.isdigit()]
    except FileNotFoundError:
        return []


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_partial_run(run_dir: Path) -> None:
    """A run killed before its first checkpoint has nothing to resume: remove it so `train` starts clean (refusing
    if the folder holds anything a run does not write)."""
    if not run_dir.exists():
        return
    foreign = [p.name for p in run_dir.iterdir() if p.name not in RUN_ARTIFACTS and not p.name.startswith(".")]
    if foreign:
        raise RuntimeError(f"{run_dir} exists and holds {foreign}, which a run does not write; move it away")
    shutil.rmtree(run_dir)


def load_results(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    return data if isinstance(data, dict) else {"runs": data}


def config_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += config_differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: run has {b!r}, sweep wants {a!r}"]


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    """One job per distinct resolved config; checks existing run dirs were made with the same settings."""
    from robotrl.config import ConfigError, dump_config, load_config

    variants = make_variants(args.variants)
    for override in args.overrides:
        key = override.split("=", 1)[0].strip()
        clash = [v.name for v in variants if key in v.knobs]
        if clash or key in ("seed", "reward.preference.budget"):
            raise SystemExit(f"error: override {override!r} would change what the sweep itself sets "
                             f"({'the variants ' + ', '.join(clash) if clash else key}); use the sweep's options")
    jobs: dict[str, Job] = {}
    runs_dir = Path(args.runs_dir)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for variant in variants:
            overrides = [f"seed={seed}", *variant.overrides, *args.overrides]
            if args.budget is not None:
                overrides.insert(1, f"reward.preference.budget={args.budget}")
            try:
                config = load_config(args.config, overrides)
            except ConfigError as err:
                raise SystemExit(f"error: {err}") from None
            if config.reward.source != "preference":
                raise SystemExit(f"error: {args.config} has reward.source={config.reward.source}; the sweep varies "
                                 "reward.preference.* and needs reward.source: preference")
            resolved = yaml.safe_load(dump_config(config))
            key = json.dumps(resolved, sort_keys=True)
            if key in jobs:  # e.g. teacher-oracle and sampler-disagreement when the config samples by disagreement
                jobs[key].aliases.append(variant.name)
                continue
            jobs[key] = Job(variant.name, seed, runs_dir / f"{variant.name}-s{seed}", overrides, resolved)
    for job in jobs.values():
        saved = job.run_dir / "config.yaml"
        if saved.exists():
            diffs = config_differences(job.resolved, yaml.safe_load(saved.read_text()))
            if diffs:
                raise SystemExit(f"error: {job.run_dir} was started with other settings:\n  " + "\n  ".join(diffs)
                                 + "\nuse another --runs-dir, or delete that run")
    return list(jobs.values())


def cmd_sweep(args: argparse.Namespace) -> int:
    print(f"$ {command_line()}\n", flush=True)
    stem = Path(args.config).stem
    args.runs_dir = args.runs_dir or f"runs/bench-{stem}"
    args.out = args.out or f"benchmarks/results/{stem}_{args.variants}.json"
    jobs = plan_jobs(args)
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    shared = [f"{j.variant} = {', '.join(j.aliases)}" for j in jobs if j.aliases]
    print(f"{len(jobs)} runs, {args.jobs} at a time, in {args.runs_dir}; results -> {args.out}"
          + (f"\nsame config, run once: {'; '.join(shared)}" if shared else ""), flush=True)
    sweep = Sweep(args, jobs)
    if args.dry_run:
        for job in jobs:
            state, cmd = sweep.next_step(job)
            name = "/".join([job.variant, *job.aliases])
            print(f"{name:24s} seed {job.seed}: {state}" + (f"\n    {shlex.join(cmd)}" if cmd else ""))
        return 0
    code = sweep.run()
    if Path(args.out).exists() and code != 130:
        print()
        report(Path(args.out), None, order=[n for j in jobs for n in (j.variant, *j.aliases)])
    return code


# --------------------------------------------------------------------------------------------------------- report
def median_curve(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """(steps, median, min, max) over runs, each run interpolated onto the union of steps inside its own range."""
    grid = np.unique(np.concatenate([steps for steps, _ in curves]))
    stacked = np.full((len(curves), len(grid)), np.nan)
    for i, (steps, values) in enumerate(curves):
        inside = (grid >= steps[0]) & (grid <= steps[-1])
        stacked[i, inside] = np.interp(grid[inside], steps, values)
    return grid, np.nanmedian(stacked, 0), np.nanmin(stacked, 0), np.nanmax(stacked, 0)


def run_curve(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    path = Path(run_dir)
    if not (path / "metrics.jsonl").exists():
        return None
    from robotrl.logger import read_metrics

    steps, values = eval_series(read_metrics(path / "metrics.jsonl"))
    return (steps, values) if len(steps) else None


def report(path: Path, plot: Path | None, order: Sequence[str] | None = None) -> None:
    """Markdown table per variant (median, min/max over seeds) and optionally the bar + learning-curve plot."""
    data = load_results(path)
    runs = data["runs"]
    names = list(dict.fromkeys([*(order or []), *(r["variant"] for r in runs)]))
    groups = {n: sorted([r for r in runs if r["variant"] == n], key=lambda r: r["seed"]) for n in names}
    groups = {n: g for n, g in groups.items() if g}
    for command in data.get("commands", []):
        print(f"results of: {command}")
    print()
    print(f"final return = mean of the last {LAST_EVALS} eval/return records; accuracy and correlation = mean of the "
          f"last {LAST_EVALS} diagnostics (fresh pairs labelled by the true reward); medians over seeds\n")
    print("| variant | teacher | sampler | seeds | steps | final return (median) | min | max | true pref. accuracy | "
          "return correlation | queries (skipped / equal) | reward learning + relabelling, share of wall time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, group in groups.items():
        ret = [num(r["final_return"]) for r in group]
        med = lambda key, group=group: median_of(group, key)  # noqa: E731
        queries = (f"{fmt(med('queries'))} ({fmt(med('skipped'))} / {fmt(med('equal'))})"
                   if np.isfinite(med("queries")) else "n/a")
        share = med("reward_cost_share")
        steps = sorted({r["final_step"] for r in group if r.get("final_step") is not None})
        shared = f" (= {', '.join(group[0]['shared_with'])})" if group[0].get("shared_with") else ""
        print(f"| {name}{shared} | {group[0].get('teacher')} | {group[0].get('sampler')} | "
              f"{', '.join(str(r['seed']) for r in group)} | {'/'.join(map(str, steps))} | "
              f"{fmt(statistics.median(ret))} | {fmt(min(ret))} | {fmt(max(ret))} | "
              f"{fmt(med('true_pref_accuracy'), 3)} | {fmt(med('return_correlation'), 3)} | {queries} | "
              f"{fmt(100 * share, 1) + '%' if np.isfinite(share) else 'n/a'} |")
    if plot is not None:
        plot_report(groups, plot, title=Path(path).stem)
        print(f"\nplot: {plot}")


def plot_report(groups: dict[str, list[dict[str, Any]]], out: Path, title: str) -> None:
    plt = pyplot()
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(14, 5))
    names = list(groups)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        ret = [num(r["final_return"]) for r in groups[name]]
        med = statistics.median(ret)
        bars.bar(i, med, color=colors[i % len(colors)], yerr=[[med - min(ret)], [max(ret) - med]], capsize=4)
        bars.scatter([i] * len(ret), ret, color="black", s=10, zorder=3)
        found = [c for c in (run_curve(r["run_dir"]) for r in groups[name]) if c is not None]
        if found:
            steps, median, low, high = median_curve(found)
            curves.plot(steps, median, color=colors[i % len(colors)], label=f"{name} ({len(found)} seeds)")
            curves.fill_between(steps, low, high, color=colors[i % len(colors)], alpha=0.15)
    bars.set_xticks(range(len(names)), names, rotation=30, ha="right")
    bars.set_ylabel(f"final eval return (mean of last {LAST_EVALS} evals)")
    bars.set_title("median over seeds, bars = min-max, dots = seeds")
    curves.set_xlabel("env steps")
    curves.set_ylabel("eval/return")
    curves.set_title("median over seeds (shaded: min-max)")
    curves.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cmd_report(args: argparse.Namespace) -> int:
    print(f"$ {command_line()}\n")
    report(Path(args.results), Path(args.plot) if args.plot else None)
    return 0


# ----------------------------------------------------------------------------------------------------- efficiency
def by_seed(run_dirs: Sequence[str], what: str) -> dict[int, Path]:
    """Run directories keyed by the `seed` of their config.yaml (two runs with one seed is an error)."""
    out: dict[int, Path] = {}
    for spec in run_dirs:
        path = Path(spec)
        config, _ = read_run(path)
        seed = int(config.get("seed", 0))
        if seed in out:
            raise SystemExit(f"error: {what} runs {out[seed]} and {path} both have seed {seed}")
        out[seed] = path
    return out


def cmd_efficiency(args: argparse.Namespace) -> int:
    print(f"$ {command_line()}\n")
    pebble, sac = by_seed(args.pebble, "--pebble"), by_seed(args.sac, "--sac")
    seeds = sorted(set(pebble) & set(sac))
    unpaired = sorted(set(pebble) ^ set(sac))
    if not seeds:
        raise SystemExit(f"error: no seed is in both lists (PEBBLE seeds {sorted(pebble)}, SAC seeds {sorted(sac)})")
    rows, notes = [], []
    for seed in seeds:
        full_p, full_s = summarize_run(pebble[seed]), summarize_run(sac[seed])
        if full_p["final_step"] is None or full_s["final_step"] is None:
            raise SystemExit(f"error: seed {seed}: a run has no eval/return records yet")
        step = min(full_p["final_step"], full_s["final_step"])
        if full_p["final_step"] != full_s["final_step"]:
            notes.append(f"seed {seed}: PEBBLE reached step {full_p['final_step']} and SAC {full_s['final_step']}; "
                         f"both are compared at step {step}")
        p, s = summarize_run(pebble[seed], step), summarize_run(sac[seed], step)
        if p["eval_steps_averaged"] != s["eval_steps_averaged"]:
            notes.append(f"seed {seed}: evaluation steps differ (PEBBLE {p['eval_steps_averaged']}, SAC "
                         f"{s['eval_steps_averaged']})")
        ratio = p["final_return"] / s["final_return"] if s["final_return"] > 0 else float("nan")
        if not s["final_return"] > 0:
            notes.append(f"seed {seed}: SAC's return is not positive, so the ratio is undefined")
        rows.append((seed, step, p, s, ratio, full_p))
    if any(r[2]["reward_source"] != "preference" or r[3]["reward_source"] == "preference" for r in rows):
        notes.append("check the lists: --pebble runs should learn their reward (reward.source: preference) and "
                     "--sac runs should not")
    print(f"final return = mean of the last {LAST_EVALS} eval/return records at or before the compared step; "
          "reward-learning share = (time/reward_learning_s + time/relabel_s) / the run's wall time, at its end\n")
    print("| seed | step | PEBBLE return | SAC return | PEBBLE / SAC | PEBBLE - SAC | PEBBLE queries | "
          "PEBBLE wall (h) | SAC wall (h) | reward learning | relabelling | reward learning + relabelling |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed, step, p, s, ratio, full_p in rows:
        wall = full_p["wall_time_s"]
        share = lambda key, full_p=full_p, wall=wall: (  # noqa: E731
            100 * num(full_p[key]) / wall if wall > 0 else float("nan"))
        print(f"| {seed} | {step} | {fmt(p['final_return'])} | {fmt(s['final_return'])} | {fmt(ratio, 2)} | "
              f"{fmt(p['final_return'] - s['final_return'])} | {fmt(full_p['queries'])} | {fmt(wall / 3600, 2)} | "
              f"{fmt(s['wall_time_s'] / 3600, 2)} | "
              f"{fmt(share('reward_learning_s'), 1)}% | {fmt(share('relabel_s'), 1)}% | "
              f"{fmt(100 * num(full_p['reward_cost_share']), 1)}% |")
    ratios = [r[4] for r in rows if np.isfinite(r[4])]
    med = lambda xs: fmt(statistics.median(xs)) if xs else "n/a"  # noqa: E731
    print(f"| **median** | | {med([r[2]['final_return'] for r in rows])} | {med([r[3]['final_return'] for r in rows])}"
          f" | {fmt(statistics.median(ratios), 2) if ratios else 'n/a'} | "
          f"{med([r[2]['final_return'] - r[3]['final_return'] for r in rows])} | | | | | | "
          f"{fmt(100 * median_of([r[5] for r in rows], 'reward_cost_share'), 1)}% |")
    notes += [f"seed {s} has no partner run and is left out" for s in unpaired]
    if notes:
        print("\n" + "\n".join(f"note: {note}" for note in notes))
    if args.plot:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 5))
        for label, runs in (("PEBBLE", [pebble[s] for s in seeds]), ("SAC (true reward)", [sac[s] for s in seeds])):
            found = [c for c in map(run_curve, runs) if c is not None]
            steps, median, low, high = median_curve(found)
            ax.plot(steps, median, label=f"{label} ({len(found)} seeds)")
            ax.fill_between(steps, low, high, alpha=0.2)
        ax.axvline(min(r[1] for r in rows), color="grey", linestyle=":", label="compared step")
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval/return (median over seeds, shaded min-max)")
        ax.set_title(f"{rows[0][2]['env']}: PEBBLE ({fmt(rows[0][5]['queries'])} queries) vs SAC")
        ax.legend()
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        plt.close(fig)
        print(f"\nplot: {args.plot}")
    return 0


# -------------------------------------------------------------------------------------------------------- relabel
def naive_members(model: Any) -> list[Any]:
    """One nn.Sequential per ensemble member (Linear-LeakyReLU ... Linear-Tanh, as B-Pref builds them), holding the
    same weights as `model`'s batched ensemble so both compute the same rewards."""
    import torch
    from torch import nn

    members = []
    layers = model.net.layers
    for e in range(model.size):
        modules: list[nn.Module] = []
        for i, layer in enumerate(layers):
            linear = nn.Linear(layer.weight.shape[1], layer.weight.shape[2])
            with torch.no_grad():
                linear.weight.copy_(layer.weight[e].T)
                linear.bias.copy_(layer.bias[e, 0])
            modules += [linear, nn.LeakyReLU() if i < len(layers) - 1 else nn.Tanh()]
        members.append(nn.Sequential(*modules))
    return members


def naive_relabel(buffer: Any, members: list[Any], chunk: int, autograd: bool = False) -> None:
    """B-Pref's way: numpy storage, fixed-size chunks, one forward per member in a Python loop, mean in numpy.
    B-Pref leaves autograd on (it calls .detach() on the outputs); `autograd=True` does the same."""
    import torch

    size = len(buffer)
    obs, action = buffer.storage["obs"].numpy(), buffer.storage["action"].numpy()
    rewards = buffer.storage["reward"].numpy()
    with torch.set_grad_enabled(autograd):
        for start in range(0, size, chunk):
            stop = min(start + chunk, size)
            inputs = np.concatenate([obs[start:stop], action[start:stop]], axis=-1)
            r_hats = [member(torch.from_numpy(inputs).float()).detach().cpu().numpy() for member in members]
            rewards[start:stop] = np.mean(r_hats, axis=0).reshape(-1)


def time_repeats(fn: Callable[[], None], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return seconds


def cmd_relabel(args: argparse.Namespace) -> int:
    import torch

    from reward_learning.models import LearnedReward, RewardEnsemble, RewardModelConfig
    from robotrl.core.buffers import ReplayBuffer

    print(f"$ {command_line()}\n")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.transitions
    buffer = ReplayBuffer(n, (args.obs_dim,), args.action_dim, 0, "cpu")
    gen = torch.Generator().manual_seed(0)
    for start in range(0, n, 100_000):
        k = min(100_000, n - start)
        buffer.add(obs=torch.randn(k, args.obs_dim, generator=gen),
                   next_obs=torch.randn(k, args.obs_dim, generator=gen),
                   action=torch.rand(k, args.action_dim, generator=gen) * 2 - 1, reward=torch.zeros(k),
                   terminated=torch.zeros(k))
    model = RewardEnsemble((args.obs_dim,), args.action_dim,
                           RewardModelConfig(ensemble_size=args.ensemble, hidden_sizes=args.hidden)).eval()
    source = LearnedReward(model)
    members = naive_members(model)
    # same weights, same rewards: check on a slice before timing anything
    probe = {k: buffer.storage[k][:1000] for k in ("obs", "action")}
    with torch.no_grad():
        batched = source(probe)
        inputs = torch.cat([probe["obs"], probe["action"]], -1)
        naive = torch.stack([m(inputs) for m in members]).mean(0).reshape(-1)
    max_diff = float((batched - naive).abs().max())
    if max_diff > 1e-4:
        raise SystemExit(f"error: the naive members disagree with the ensemble (max |diff| {max_diff:.2e})")
    rows: list[tuple[str, int, Callable[[], None]]] = []
    for chunk in args.chunks:
        rows.append(("robotrl `ReplayBuffer.relabel(LearnedReward)` (EnsembleMLP)"
                     + (" (its default chunk)" if chunk == DEFAULT_RELABEL_CHUNK else ""), chunk,
                     lambda chunk=chunk: buffer.relabel(source, chunk_size=chunk)))
    for chunk in args.naive_chunks:
        rows.append((f"Python loop over {args.ensemble} member MLPs" + (" (B-Pref's relabel)" if chunk == 200 else ""),
                     chunk, lambda chunk=chunk: naive_relabel(buffer, members, chunk)))
    if args.bpref_autograd:
        rows.append(("the same loop with autograd on, exactly as B-Pref runs it", 200,
                     lambda: naive_relabel(buffer, members, 200, autograd=True)))
    results = []
    for name, chunk, fn in rows:
        fn()  # warm-up (allocations, first-call overheads)
        results.append((name, chunk, statistics.median(time_repeats(fn, args.repeats))))
    hidden = "x".join(map(str, args.hidden))
    print(f"{n:,} transitions (obs {args.obs_dim}, action {args.action_dim}), reward ensemble of {args.ensemble} "
          f"MLPs {args.obs_dim + args.action_dim}-{hidden}-1 (LeakyReLU, tanh), {args.threads} torch thread(s), CPU, "
          f"median of {args.repeats} repeats after a warm-up. Both ways give the same rewards (max |diff| "
          f"{max_diff:.1e}). Loops run under no_grad unless the row says otherwise.\n")
    naive = results[len(args.chunks):]
    _, base_chunk, base = next((r for r in naive if r[1] == 200), naive[0] if naive else results[0])
    print("| method | chunk (rows) | seconds for the full buffer | transitions/s | "
          f"speed-up vs the {base_chunk}-row loop |")
    print("|---|---|---|---|---|")
    for name, chunk, seconds in results:
        print(f"| {name} | {chunk:,} | {seconds:.2f} | {n / seconds:,.0f} | {base / seconds:.2f}x |")
    return 0


# ----------------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "sweep", help="train every variant x seed (B-Pref teachers and/or query samplers) in subprocesses",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one run per variant and seed with `robotrl train CFG --run-dir DIR/<variant>-s<seed> "
        "seed=<s> reward.preference.budget=<b> <variant> <overrides>`.\nRuns with an evaluation at "
        "train.total_steps are skipped, runs with a checkpoint are resumed (`robotrl resume`), so rerunning a "
        "killed\nsweep loses nothing. Ctrl-C / SIGTERM make running trainers checkpoint and stop. Each run's output "
        "goes to DIR/<variant>-s<seed>.log.\nVariants: teachers = reward.preference.teacher=oracle|noisy|mistake|"
        "skip|myopic|equal (the config's sampler);\nsamplers = reward.preference.sampler=uniform|disagreement|entropy "
        "with the oracle teacher. Variants whose resolved configs\nare identical (teacher-oracle and "
        "sampler-disagreement when the config samples by disagreement) run once.",
        epilog="example: sweep --config configs/pendulum_pebble.yaml --variants samplers --seeds 3 --jobs 2 "
        "train.total_steps=20000")
    p.add_argument("--config", required=True, type=Path, help="PEBBLE/PrefPPO YAML config (reward.source: preference)")
    p.add_argument("--variants", choices=("teachers", "samplers", "both"), required=True)
    p.add_argument("--seeds", type=int, required=True, help="number of seeds")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed+seeds-1 (default 0)")
    p.add_argument("--budget", type=int, default=None,
                   help="reward.preference.budget, total queries per run (default: the config's, e.g. 1000)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (default 1; each uses "
                   "train.torch_threads threads)")
    p.add_argument("--out", default=None, help="results JSON, merged if it exists (default "
                   "benchmarks/results/<config>_<variants>.json)")
    p.add_argument("--runs-dir", default=None, help="parent of the run directories (default runs/bench-<config>)")
    p.add_argument("--dry-run", action="store_true", help="print each run's state and command, train nothing")
    p.add_argument("overrides", nargs="*", help="extra key.sub=value overrides for every run, e.g. "
                   "train.total_steps=100000")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="markdown table per variant and an optional bar + learning-curve plot",
                       description="Per variant: median and min/max over seeds of the final return (mean of the last "
                       "3 evaluations), median true preference accuracy and return correlation of the learned "
                       "reward, queries used and the share of wall time spent learning the reward and relabelling. "
                       "The plot reads the learning curves from the run directories' metrics.jsonl.")
    p.add_argument("results", help="results JSON written by `sweep`")
    p.add_argument("--plot", default=None, help="PNG: bars of the final return per variant (median, min-max) and "
                   "median learning curves")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("efficiency", help="PEBBLE vs SAC on the true reward, matched by seed",
                       description="Per seed (from each run's config.yaml): final return of PEBBLE and SAC at the "
                       "same env step (the last step both reached), their ratio and its median, and the share of "
                       "PEBBLE's wall time spent in reward learning and relabelling.")
    p.add_argument("--pebble", nargs="+", required=True, metavar="RUN_DIR", help="PEBBLE run directories")
    p.add_argument("--sac", nargs="+", required=True, metavar="RUN_DIR", help="SAC (true reward) run directories")
    p.add_argument("--plot", default=None, help="PNG of both learning curves (median over seeds, min-max shaded)")
    p.set_defaults(func=cmd_efficiency)

    p = sub.add_parser("relabel", help="time relabelling a full replay buffer with a reward ensemble",
                       description="Fill a CPU ReplayBuffer with random transitions and time "
                       "`buffer.relabel(LearnedReward(RewardEnsemble))` against the naive B-Pref way (a Python loop "
                       "over one nn.Sequential per member, over chunks), in the same process with the same weights.")
    p.add_argument("--transitions", type=int, default=1_000_000, help="buffer size (default 1,000,000)")
    p.add_argument("--ensemble", type=int, default=3, help="ensemble members (default 3)")
    p.add_argument("--obs-dim", type=int, default=17, help="default 17 (HalfCheetah)")
    p.add_argument("--action-dim", type=int, default=6, help="default 6 (HalfCheetah)")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256, 256], help="hidden sizes (default 256 256 256)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported (default 3)")
    p.add_argument("--chunks", type=int, nargs="+", default=[DEFAULT_RELABEL_CHUNK, 65536, 1024],
                   help=f"chunk sizes for ReplayBuffer.relabel (default {DEFAULT_RELABEL_CHUNK} = its default, and "
                   "4096 and 1024)")
    p.add_argument("--naive-chunks", type=int, nargs="*", default=[200, 65536],
                   help=f"chunk sizes of the naive loop (default 200 = B-Pref's, and {DEFAULT_RELABEL_CHUNK})")
    p.add_argument("--no-bpref-autograd", dest="bpref_autograd", action="store_false",
                   help="skip the extra row timing the 200-row loop with autograd on (as B-Pref runs it)")
    p.set_defaults(func=cmd_relabel)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may come before or after options (`sweep --config c.yaml train.total_steps=1500 --seeds 2`)
    if extra and args.command == "sweep" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    for name in ("seeds", "jobs"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name} must be at least 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

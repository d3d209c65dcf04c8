"""Env throughput: env steps per second of any registered ids, one env and `VecEnv`s, median of repeats.

Each measurement steps with random actions (drawn before the clock starts) and render_mode=None; resets at episode
ends count, as in training. A VecEnv's rate counts transitions (vector steps x num_envs).

    python benchmarks/env_throughput.py metaworld/reach-v3 HalfCheetah-v5 --steps 2000 --num-envs 1 4 --repeats 3

Prints a markdown table and merges its rows into benchmarks/results/env_throughput.json, keyed by (id, num_envs,
vectorization), so each env family can add its own rows to the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import envs

RESULTS = Path(__file__).parent / "results" / "env_throughput.json"
WARMUP_STEPS = 50


def single_env_rates(env_id: str, steps: int, repeats: int) -> list[float]:
    """Steps per second of one `envs.make` env, once per repeat."""
    env = envs.make(env_id, render_mode=None, seed=0)
    env.reset()
    actions = [env.action_space.sample() for _ in range(steps)]
    rates = []
    for repeat in range(repeats + 1):  # the first pass warms up caches and lazy imports and is not reported
        count = WARMUP_STEPS if repeat == 0 else steps
        start = time.perf_counter()
        for action in actions[:count]:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        if repeat:
            rates.append(count / (time.perf_counter() - start))
    env.close()
    return rates


def vector_env_rates(env_id: str, num_envs: int, vectorization: str, steps: int, repeats: int) -> list[float]:
    """Transitions per second of a `VecEnv` of `num_envs` envs, once per repeat (autoreset is built in)."""
    vec = envs.make_vec(env_id, num_envs, seed=0, vectorization=vectorization, render_mode=None)
    vec.reset(seed=0)
    vector_steps = max(1, steps // num_envs)
    actions = [vec.action_space.sample() for _ in range(vector_steps)]
    rates = []
    try:
        for repeat in range(repeats + 1):
            count = min(vector_steps, WARMUP_STEPS) if repeat == 0 else vector_steps
            start = time.perf_counter()
            for action in actions[:count]:
                vec.step(action)
            if repeat:
                rates.append(count * num_envs / (time.perf_counter() - start))
    finally:
        vec.close()
    return rates


def merge_results(rows: list[dict], path: Path) -> None:
    """Replace rows with the same (env_id, num_envs, vectorization) in the JSON file and keep the others."""
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    key = lambda row: (row["env_id"], row["num_envs"], row["vectorization"])  # noqa: E731
    new_keys = {key(row) for row in rows}
    merged = [row for row in old if key(row) not in new_keys] + rows
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": sorted(merged, key=key)}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Measure every (id, num_envs) pair, print the table and update the results file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env_ids", nargs="+", help="registered env ids (see `robotrl envs`)")
    parser.add_argument("--steps", type=int, default=2000, help="env steps (transitions) per repeat")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4], help="1 = a single env, n > 1 = a VecEnv")
    parser.add_argument("--vectorization", choices=["sync", "async"], default="sync")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    command = shlex.join(["python", "benchmarks/env_throughput.py", *(sys.argv[1:] if argv is None else argv)])
    rows = []
    print("| env | envs | vectorization | steps/s (median) | min | max |\n|---|---:|---|---:|---:|---:|")
    for env_id in args.env_ids:
        for num_envs in args.num_envs:
            if num_envs == 1:
                mode, rates = "single", single_env_rates(env_id, args.steps, args.repeats)
            else:
                mode = args.vectorization
                rates = vector_env_rates(env_id, num_envs, mode, args.steps, args.repeats)
            median = statistics.median(rates)
            print(f"| {env_id} | {num_envs} | {mode} | {median:,.0f} | {min(rates):,.0f} | {max(rates):,.0f} |",
                  flush=True)
            rows.append({"env_id": env_id, "num_envs": num_envs, "vectorization": mode, "steps": args.steps,
                         "repeats": args.repeats, "steps_per_s_median": round(median, 1),
                         "steps_per_s": [round(rate, 1) for rate in rates],
                         "load_average_1min": round(os.getloadavg()[0], 2),
                         "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command})
    merge_results(rows, args.output)
    print(f"\nwrote {args.output} (load average {np.round(os.getloadavg(), 2).tolist()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

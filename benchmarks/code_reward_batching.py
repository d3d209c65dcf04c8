"""Env steps/s of training on sandboxed reward code (`reward.source: code`) scored once per env step
(`reward.code.score_every: step`) vs in batches (`batch`: off-policy rows written into the replay buffer when a batch
fills and before every update round; PPO: each rollout in one sandbox call).

SAC runs `--sac-steps` steps on Pendulum-v1, the first half of them the uniform-random `learning_starts` phase (timed
on its own up to the first update), then one update per env step; PPO runs `--ppo-steps` steps in rollouts of
`--ppo-rollout` steps. Modes alternate within each seed so that a busy machine slows both alike; the table holds the
medians over seeds. Model building, the end-of-run evaluation and the sandbox worker's start are not timed.

    python benchmarks/code_reward_batching.py --seeds 0 1 2 --sac-steps 4000 --ppo-steps 4096

Prints a markdown table and writes benchmarks/results/code_reward_batching.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from robotrl.config import load_config
from robotrl.trainer import Trainer

RESULTS = Path(__file__).parent / "results" / "code_reward_batching.json"
MODES = ("step", "batch")
REWARD_CODE = '''
import numpy as np


def compute_dense_reward(obs, action, next_obs):
    """Keep the pendulum up, with little torque."""
    upright = next_obs[:, 0]
    effort = 0.01 * np.square(action).sum(axis=-1)
    return upright - effort, {"upright": upright, "effort": -effort}
'''


def run(algo: dict, mode: str, seed: int, steps: int, code: Path, runs: Path, threads: int) -> dict:
    """Time one training run; returns env steps/s overall (and of SAC's random phase) and the sandbox calls."""
    raw = {
        "name": f"code-bench-{algo['name']}-{mode}", "seed": seed, "device": "cpu", "runs_dir": str(runs),
        "env": {"id": "Pendulum-v1"}, "algo": algo,
        "reward": {"source": "code", "code": {"path": str(code), "score_every": mode}},
        "train": {"total_steps": steps, "eval_every": 0, "eval_episodes": 1, "checkpoint_every": 10 * steps,
                  "log_every": steps, "torch_threads": threads, "save_buffer": False},
        "logging": {"tensorboard": False},
    }
    trainer = Trainer(load_config(None, [], base=raw), progress=False)
    trainer._evaluate = lambda: {}  # the end-of-run evaluation steps an env without any reward code
    first_update: list[float] = []
    update = trainer.agent.update

    def timed_update(batch: object) -> dict[str, torch.Tensor]:
        if not first_update:
            first_update.append(time.perf_counter())
        return update(batch)

    trainer.agent.update = timed_update
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    result = {"steps_per_s": steps / seconds, "calls": trainer.rewarder.calls}
    if algo["name"] == "sac":
        result["random_steps_per_s"] = algo["learning_starts"] / (first_update[0] - start)
    return result


def table(results: dict[str, dict[str, list[dict]]]) -> str:
    """Markdown table of medians over seeds: per-step vs batched env steps/s and their ratio."""
    lines = ["| run | phase | per-step scoring (steps/s) | batched (steps/s) | batched / per-step | sandbox calls "
             "(per-step / batched) |", "|---|---|---|---|---|---|"]
    for name, modes in results.items():
        phases = [("random (learning_starts)", "random_steps_per_s")] if name.startswith("SAC") else []
        for phase, key in [*phases, ("whole run", "steps_per_s")]:
            step, batch = (statistics.median(r[key] for r in modes[m]) for m in MODES)
            calls = "" if key != "steps_per_s" else " / ".join(f"{statistics.median(r['calls'] for r in modes[m]):.0f}"
                                                               for m in MODES)
            lines.append(f"| {name} | {phase} | {step:.0f} | {batch:.0f} | {batch / step:.2f}x | {calls} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sac-steps", type=int, default=4000, help="half of them before learning starts")
    parser.add_argument("--ppo-steps", type=int, default=4096)
    parser.add_argument("--ppo-rollout", type=int, default=1024, help="PPO env steps per rollout (num_steps)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a loaded 2-core box)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="code-bench-"))
    code = work / "reward.py"
    code.write_text(REWARD_CODE)
    setups = {
        f"SAC Pendulum-v1, {args.sac_steps} steps": (
            {"name": "sac", "learning_starts": args.sac_steps // 2}, args.sac_steps),
        f"PPO Pendulum-v1, {args.ppo_steps} steps": (
            {"name": "ppo", "num_steps": args.ppo_rollout}, args.ppo_steps),
    }
    results: dict[str, dict[str, list[dict]]] = {name: {m: [] for m in MODES} for name in setups}
    for name, (algo, steps) in setups.items():
        for seed in args.seeds:
            for mode in MODES:
                result = run(algo, mode, seed, steps, code, work / "runs", args.threads)
                results[name][mode].append(result)
                print(f"{name} seed {seed} {mode}: {result}", flush=True)
    command = shlex.join(["python", *sys.argv])
    print(f"\n{table(results)}\n\n`{command}`")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": command, "date": datetime.now(timezone.utc).isoformat(),
                                   "threads": args.threads, "loadavg": load, "runs": results}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()

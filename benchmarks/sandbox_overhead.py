"""What running LLM-written reward code in the sandbox costs: evaluations per second of one Eureka-style reward
function (HalfCheetah-sized batches: 17-dim observations, 6-dim actions, five named terms) in the sandbox
(`SandboxedReward.evaluate`: tensors -> worker process -> validated tensors) against the same function called in this
process on the same tensors (numpy in, torch out, no validation), for batch sizes 1, 256 and 4096. Each figure is the
median over `--repeats` timed repeats of `--seconds` each; worker start-up (process + numpy import + code load) is
timed separately.

Prints a markdown table and writes JSON to benchmarks/results/sandbox_overhead.json.

    python benchmarks/sandbox_overhead.py --repeats 7 --seconds 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from reward_learning.sandbox import SandboxedReward

RESULTS = Path(__file__).resolve().parent / "results" / "sandbox_overhead.json"
BATCH_SIZES = (1, 256, 4096)
OBS_DIM, ACTION_DIM = 17, 6
REWARD_CODE = '''
import numpy as np


def compute_dense_reward(obs, action, next_obs):
    """Run forward fast and upright, with small and smooth actions."""
    forward = (next_obs[:, 8] - obs[:, 8]) / 0.05
    upright = np.exp(-np.square(next_obs[:, 1]))
    control = -0.1 * np.sum(np.square(action), axis=-1)
    joint_speed = -0.01 * np.linalg.norm(next_obs[:, 11:], axis=-1)
    alive = np.where(np.abs(next_obs[:, 0]) < 1.0, 0.5, 0.0)
    total = forward + upright + control + joint_speed + alive
    return total, {"forward": forward, "upright": upright, "control": control, "joint_speed": joint_speed,
                   "alive": alive}
'''


def make_batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(n, OBS_DIM, generator=g), "action": torch.rand(n, ACTION_DIM, generator=g) * 2 - 1,
            "next_obs": torch.randn(n, OBS_DIM, generator=g)}


def in_process(code: str) -> Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """The same function executed in this process with full globals (the unsafe baseline: what Text2Reward does)."""
    namespace: dict = {}
    exec(code, namespace)
    function = namespace["compute_dense_reward"]

    def evaluate(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, terms = function(batch["obs"].numpy(), batch["action"].numpy(), batch["next_obs"].numpy())
        return torch.as_tensor(total), {k: torch.as_tensor(v) for k, v in terms.items()}

    return evaluate


def rate(evaluate: Callable, batch: dict[str, torch.Tensor], seconds: float, repeats: int) -> list[float]:
    """Evaluations per second in each of `repeats` runs of about `seconds`."""
    evaluate(batch)  # warm-up
    rates = []
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            evaluate(batch)
            calls += 1
        rates.append(calls / elapsed)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one timed repeat")
    args = parser.parse_args()
    torch.set_num_threads(1)

    starts = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        SandboxedReward(REWARD_CODE).close()
        starts.append(time.perf_counter() - started)
    rows = []
    with SandboxedReward(REWARD_CODE) as sandboxed:
        direct = in_process(REWARD_CODE)
        for n in BATCH_SIZES:
            batch = make_batch(n)
            torch.testing.assert_close(sandboxed.evaluate(batch)[0], direct(batch)[0].float())
            sandbox_rates = rate(sandboxed.evaluate, batch, args.seconds, args.repeats)
            direct_rates = rate(direct, batch, args.seconds, args.repeats)
            sandbox, inproc = statistics.median(sandbox_rates), statistics.median(direct_rates)
            rows.append({"batch": n, "sandbox_calls_per_s": sandbox, "in_process_calls_per_s": inproc,
                         "sandbox_transitions_per_s": sandbox * n, "in_process_transitions_per_s": inproc * n,
                         "overhead_us_per_call": (1 / sandbox - 1 / inproc) * 1e6, "slowdown": inproc / sandbox,
                         "sandbox_rates": sandbox_rates, "in_process_rates": direct_rates})

    print(f"worker start-up (process, numpy import, code load): median {statistics.median(starts) * 1000:.0f} ms\n")
    print("| batch | sandbox calls/s | in-process calls/s | sandbox transitions/s | in-process transitions/s "
          "| overhead per call | slowdown |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['batch']} | {r['sandbox_calls_per_s']:,.0f} | {r['in_process_calls_per_s']:,.0f} "
              f"| {r['sandbox_transitions_per_s']:,.0f} | {r['in_process_transitions_per_s']:,.0f} "
              f"| {r['overhead_us_per_call']:,.0f} µs | {r['slowdown']:.1f}x |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"repeats": args.repeats, "seconds_per_repeat": args.seconds,
                                   "startup_seconds": starts, "rows": rows, "machine": platform.platform(),
                                   "cpus": os.cpu_count(), "numpy": np.__version__, "torch": torch.__version__,
                                   "load_average": os.getloadavg()}, indent=1) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Cost of one SAC / TD3 gradient update: robotrl vs Stable-Baselines3, and how much of it is matrix multiplication.

Both libraries update from a replay buffer filled with the same random HalfCheetah-shaped transitions (obs 17,
action 6, batch 256, 2x256 MLPs). The matmul share comes from the torch profiler (mm/addmm/bmm/baddbmm self time)
and is the floor no implementation of the same fp32 maths can go below on this CPU.

    python benchmarks/update_cost.py --threads 1 --updates 300 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

OBS, ACT, BATCH = 17, 6, 256
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def robotrl_update(algo: str):
    from robotrl.agents import SAC, TD3, SACConfig, TD3Config
    from robotrl.core.buffers import ReplayBuffer

    device = torch.device("cpu")
    agent = SAC(OBS, ACT, SACConfig(), device) if algo == "sac" else TD3(OBS, ACT, TD3Config(), device)
    buffer = ReplayBuffer(100_000, (OBS,), ACT, 0, device)
    rng = np.random.default_rng(0)
    for _ in range(100):
        buffer.add(obs=rng.normal(size=(100, OBS)), action=rng.uniform(-1, 1, (100, ACT)),
                   next_obs=rng.normal(size=(100, OBS)), reward=rng.normal(size=100), terminated=np.zeros(100))
    return lambda: agent.update(buffer.sample(BATCH))


def sb3_update(algo: str):
    import gymnasium as gym
    from stable_baselines3 import SAC, TD3

    env = gym.make("HalfCheetah-v5")
    cls = SAC if algo == "sac" else TD3
    model = cls("MlpPolicy", env, device="cpu", seed=0, policy_kwargs=dict(net_arch=[256, 256]))
    rng = np.random.default_rng(0)
    for _ in range(10_000):
        model.replay_buffer.add(rng.normal(size=(1, OBS)), rng.normal(size=(1, OBS)), rng.uniform(-1, 1, (1, ACT)),
                                rng.normal(size=1), np.zeros(1), [{}])
    model._setup_learn(1)
    return lambda: model.train(gradient_steps=1, batch_size=BATCH)


def time_per_call(fn, calls: int) -> float:
    for _ in range(20):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def matmul_share(fn, calls: int) -> float:
    """Seconds per call spent inside matmul kernels."""
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(calls):
            fn()
    total_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS)
    return total_us / 1e6 / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| algo | threads | robotrl ms/update | SB3 ms/update | speed-up | robotrl matmul ms | SB3 matmul ms |")
    print("|---|---|---|---|---|---|---|")
    for algo in ("sac", "td3"):
        ours, theirs = robotrl_update(algo), sb3_update(algo)
        t_ours, t_sb3 = [], []
        for _ in range(args.repeats):  # alternate to spread machine noise over both
            t_ours.append(time_per_call(ours, args.updates))
            t_sb3.append(time_per_call(theirs, args.updates))
        m_ours, m_sb3 = matmul_share(ours, 100), matmul_share(theirs, 100)
        a, b = statistics.median(t_ours) * 1e3, statistics.median(t_sb3) * 1e3
        print(f"| {algo} | {args.threads} | {a:.2f} | {b:.2f} | {b / a:.2f}x | {m_ours * 1e3:.2f} | "
              f"{m_sb3 * 1e3:.2f} |")


if __name__ == "__main__":
    main()

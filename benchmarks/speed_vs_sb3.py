"""robotrl vs Stable-Baselines3 (and sb3-contrib): env-steps/s and final return with identical hyper-parameters.

Every (algorithm, torch threads, seed) pair runs both libraries, one after the other in fresh subprocesses of this
script (clean thread settings and memory), alternating which goes first so machine noise hits both alike. Each run
trains on the algorithm's env (HalfCheetah-v5 for SAC/TD3/PPO, CartPole-v1 for QR-DQN against sb3-contrib) for the
same number of env steps, then both policies are scored by the SAME evaluation loop (deterministic actions,
`--eval-episodes` episodes on a fresh gymnasium env).

    python benchmarks/speed_vs_sb3.py --algos sac td3 ppo --threads 1 2 --seeds 3 --out benchmarks/results/hc.json
    python benchmarks/speed_vs_sb3.py --algos qrdqn --threads 1 --seeds 3 --out benchmarks/results/qrdqn.json
    python benchmarks/speed_vs_sb3.py --report benchmarks/results/hc.json     # table for BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV_IDS = {"sac": "HalfCheetah-v5", "td3": "HalfCheetah-v5", "ppo": "HalfCheetah-v5", "qrdqn": "CartPole-v1"}

# One set of hyper-parameters per algorithm, applied to both libraries.
HPARAMS = {
    "sac": dict(hidden=[256, 256], lr=3e-4, batch=256, buffer=1_000_000, learning_starts=5000, tau=0.005,
                gamma=0.99),
    "td3": dict(hidden=[256, 256], lr=1e-3, batch=256, buffer=1_000_000, learning_starts=5000, tau=0.005,
                gamma=0.99, policy_delay=2, noise=0.1, target_noise=0.2, noise_clip=0.5),
    "ppo": dict(hidden=[64, 64], lr=3e-4, n_steps=2048, batch=64, epochs=10, gamma=0.99, gae_lambda=0.95,
                clip=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5),
    # configs/cartpole_qrdqn.yaml (rl-baselines3-zoo's CartPole QR-DQN); Adam eps 0.01 / batch as sb3-contrib sets it
    "qrdqn": dict(hidden=[256, 256], lr=2.3e-3, batch=64, buffer=100_000, learning_starts=1000, train_freq=256,
                  gradient_steps=128, target_update=128, quantiles=10, gamma=0.99, eps_end=0.04,
                  exploration_steps=8000, max_grad_norm=10.0),
}
DEFAULT_STEPS = {"sac": 15_000, "td3": 15_000, "ppo": 50_000, "qrdqn": 50_000}


def train_robotrl(algo: str, steps: int, seed: int, threads: int, workdir: Path, compile: bool = False):
    from robotrl.config import load_config
    from robotrl.policy import Policy
    from robotrl.trainer import Trainer

    h = HPARAMS[algo]
    if algo == "ppo":
        algo_cfg = dict(name="ppo", hidden_sizes=h["hidden"], lr=h["lr"], num_steps=h["n_steps"],
                        minibatch_size=h["batch"], epochs=h["epochs"], gamma=h["gamma"], gae_lambda=h["gae_lambda"],
                        clip_range=h["clip"], ent_coef=h["ent_coef"], vf_coef=h["vf_coef"],
                        max_grad_norm=h["max_grad_norm"], activation="tanh")
    elif algo == "qrdqn":  # target_update counts gradient steps here and env steps in SB3: both refresh every round
        algo_cfg = dict(name="qrdqn", hidden_sizes=h["hidden"], lr=h["lr"], adam_eps=0.01 / h["batch"],
                        batch_size=h["batch"], buffer_size=h["buffer"], learning_starts=h["learning_starts"],
                        train_every=h["train_freq"], gradient_steps=h["gradient_steps"],
                        target_update_interval=h["target_update"], num_quantiles=h["quantiles"], gamma=h["gamma"],
                        epsilon_end=h["eps_end"], exploration_steps=h["exploration_steps"],
                        max_grad_norm=h["max_grad_norm"])
    elif algo == "sac":
        algo_cfg = dict(name="sac", hidden_sizes=h["hidden"], actor_lr=h["lr"], critic_lr=h["lr"], alpha_lr=h["lr"],
                        batch_size=h["batch"], buffer_size=h["buffer"], learning_starts=h["learning_starts"],
                        tau=h["tau"], gamma=h["gamma"])
    else:
        algo_cfg = dict(name="td3", hidden_sizes=h["hidden"], actor_lr=h["lr"], critic_lr=h["lr"],
                        batch_size=h["batch"], buffer_size=h["buffer"], learning_starts=h["learning_starts"],
                        tau=h["tau"], gamma=h["gamma"], policy_delay=h["policy_delay"], exploration_noise=h["noise"],
                        target_policy_noise=h["target_noise"], target_noise_clip=h["noise_clip"])
    algo_cfg["compile"] = compile
    base = dict(name=f"bench-{algo}", seed=seed, device="cpu", runs_dir=str(workdir), env=dict(id=ENV_IDS[algo]),
                algo=algo_cfg, logging=dict(tensorboard=False),
                train=dict(total_steps=steps, eval_every=0, eval_episodes=1, checkpoint_every=10 * steps,
                           log_every=10_000, torch_threads=threads, save_buffer=False))
    trainer = Trainer(load_config(None, base=base), progress=False)
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    elapsed = (time.perf_counter() - start, time.process_time() - cpu_start)
    return elapsed, Policy(trainer.agent, trainer.config, trainer.adapter, trainer.device, trainer.step).act


def train_sb3(algo: str, steps: int, seed: int, threads: int, workdir: Path):
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import PPO, SAC, TD3
    from stable_baselines3.common.noise import NormalActionNoise

    torch.set_num_threads(threads)
    env = gym.make(ENV_IDS[algo])
    h = HPARAMS[algo]
    if algo == "qrdqn":
        from sb3_contrib import QRDQN

        model = QRDQN("MlpPolicy", env, learning_rate=h["lr"], buffer_size=h["buffer"], batch_size=h["batch"],
                      learning_starts=h["learning_starts"], train_freq=h["train_freq"],
                      gradient_steps=h["gradient_steps"], target_update_interval=h["target_update"], gamma=h["gamma"],
                      exploration_fraction=h["exploration_steps"] / steps, exploration_final_eps=h["eps_end"],
                      max_grad_norm=h["max_grad_norm"], seed=seed, device="cpu",
                      policy_kwargs=dict(net_arch=h["hidden"], n_quantiles=h["quantiles"]))
    elif algo == "sac":
        model = SAC("MlpPolicy", env, learning_rate=h["lr"], buffer_size=h["buffer"], batch_size=h["batch"],
                    learning_starts=h["learning_starts"], tau=h["tau"], gamma=h["gamma"], seed=seed, device="cpu",
                    policy_kwargs=dict(net_arch=h["hidden"]))
    elif algo == "td3":
        n = env.action_space.shape[0]
        model = TD3("MlpPolicy", env, learning_rate=h["lr"], buffer_size=h["buffer"], batch_size=h["batch"],
                    learning_starts=h["learning_starts"], tau=h["tau"], gamma=h["gamma"], seed=seed, device="cpu",
                    policy_delay=h["policy_delay"], target_policy_noise=h["target_noise"],
                    target_noise_clip=h["noise_clip"], policy_kwargs=dict(net_arch=h["hidden"]),
                    action_noise=NormalActionNoise(np.zeros(n), h["noise"] * np.ones(n)))
    else:
        model = PPO("MlpPolicy", env, learning_rate=h["lr"], n_steps=h["n_steps"], batch_size=h["batch"],
                    n_epochs=h["epochs"], gamma=h["gamma"], gae_lambda=h["gae_lambda"], clip_range=h["clip"],
                    ent_coef=h["ent_coef"], vf_coef=h["vf_coef"], max_grad_norm=h["max_grad_norm"], seed=seed,
                    device="cpu", policy_kwargs=dict(net_arch=dict(pi=h["hidden"], vf=h["hidden"])))
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(steps)
    elapsed = (time.perf_counter() - start, time.process_time() - cpu_start)
    return elapsed, lambda obs: model.predict(obs, deterministic=True)[0]


def evaluate(policy, env_id: str, episodes: int, seed: int) -> list[float]:
    """The shared evaluation loop: deterministic actions on a fresh gymnasium env."""
    import gymnasium as gym

    env = gym.make(env_id)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 100 + episode)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def one_run(args: argparse.Namespace) -> None:
    """Child process: train one library once and print a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        if args.lib == "sb3":
            (elapsed, cpu), policy = train_sb3(args.algo, args.steps, args.seed, args.threads, Path(workdir))
        else:
            (elapsed, cpu), policy = train_robotrl(args.algo, args.steps, args.seed, args.threads, Path(workdir),
                                                   compile=args.lib == "robotrl-compiled")
        returns = evaluate(policy, ENV_IDS[args.algo], args.eval_episodes, args.seed)
    print(json.dumps({"lib": args.lib, "algo": args.algo, "seed": args.seed, "threads": args.threads,
                      "steps": args.steps, "seconds": elapsed, "fps": args.steps / elapsed, "cpu_seconds": cpu,
                      "eval_return": statistics.mean(returns), "eval_returns": returns}))


def run_all(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else []
    done = {(r["lib"], r["algo"], r["seed"], r["threads"], r["steps"]) for r in results}
    for algo in args.algos:
        steps = args.steps or DEFAULT_STEPS[algo]
        for threads in args.threads:
            for seed in range(args.seeds):
                libs = ["robotrl", "sb3"] if seed % 2 == 0 else ["sb3", "robotrl"]
                if args.compiled:
                    libs.insert(1, "robotrl-compiled")
                for lib in libs:
                    if (lib, algo, seed, threads, steps) in done:
                        continue
                    cmd = [sys.executable, __file__, "--child", "--lib", lib, "--algo", algo, "--seed", str(seed),
                           "--threads", str(threads), "--steps", str(steps), "--eval-episodes",
                           str(args.eval_episodes)]
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    if proc.returncode != 0:
                        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
                    record = json.loads(proc.stdout.strip().splitlines()[-1])
                    results.append(record)
                    out.write_text(json.dumps(results, indent=1))
                    print(f"{lib:8s} {algo} threads={threads} seed={seed}: {record['fps']:.0f} steps/s, "
                          f"return {record['eval_return']:.0f}", flush=True)
    report(out)


def report(path: Path) -> None:
    """Markdown table: median fps per library, wall and CPU-time speed ratios, mean ± std return.

    The CPU-time ratio (process CPU seconds for the same steps) is the steadier number on a shared machine: it does
    not count time spent waiting for a core that another process holds.
    """
    results = json.loads(Path(path).read_text())
    keys = sorted({(r["algo"], r["threads"], r["steps"], r["lib"]) for r in results if r["lib"] != "sb3"})
    print("| algo | variant | threads | steps | seeds | robotrl steps/s (median) | SB3 steps/s (median) | "
          "speed-up (wall) | speed-up (CPU time) | robotrl return | SB3 return |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for algo, threads, steps, variant in keys:
        rows = {lib: [r for r in results if (r["algo"], r["threads"], r["steps"], r["lib"]) ==
                      (algo, threads, steps, name)] for lib, name in (("robotrl", variant), ("sb3", "sb3"))}
        if not rows["robotrl"] or not rows["sb3"]:
            continue
        fps = {lib: statistics.median(r["fps"] for r in rs) for lib, rs in rows.items()}
        cpu = {lib: statistics.median(r["cpu_seconds"] for r in rs if "cpu_seconds" in r) if any(
            "cpu_seconds" in r for r in rs) else float("nan") for lib, rs in rows.items()}
        ret = {lib: [r["eval_return"] for r in rs] for lib, rs in rows.items()}
        fmt = lambda xs: f"{statistics.mean(xs):.0f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.0f}"
        print(f"| {algo} | {variant} | {threads} | {steps} | {len(rows['robotrl'])}/{len(rows['sb3'])} | "
              f"{fps['robotrl']:.0f} | {fps['sb3']:.0f} | {fps['robotrl'] / fps['sb3']:.2f}x | "
              f"{cpu['sb3'] / cpu['robotrl']:.2f}x | "
              f"{fmt(ret['robotrl'])} | {fmt(ret['sb3'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["sac", "td3", "ppo"], choices=sorted(HPARAMS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default per algorithm)")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/speed_vs_sb3.json")
    parser.add_argument("--report", default=None, help="print the table for an existing results file and exit")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help="also run robotrl with algo.compile=true")
    parser.add_argument("--lib", choices=["robotrl", "robotrl-compiled", "sb3"], help=argparse.SUPPRESS)
    parser.add_argument("--algo", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report:
        report(Path(args.report))
    elif args.child:
        args.threads = args.threads[0]
        one_run(args)
    else:
        run_all(args)


if __name__ == "__main__":
    main()

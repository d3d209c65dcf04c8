"""VLM reward throughput on CPU: render + embed frames/s of random CLIPs, and env steps/s of a CLIP-rewarded run with
batched scoring vs one model call per env step.

Part 1 renders frames of each env at 224 px (tiny model: its own 32 px) from a random-action rollout, then embeds
them with a random CLIP of ViT-B/32's shapes (vision 768 wide, 12 layers, patch 32, 224 px; text 512 wide, 12 layers)
and with the tiny test CLIP, at each batch size and precision; it reports frames/s of render + embed and the share
of that time spent rendering. Part 2 trains SAC through the Trainer on a CLIP reward (`score_every: episode`, i.e.
batched, vs `step`) and reports env steps/s of each and their ratio. Weights are random: speed does not depend on
them.

    python benchmarks/vlm_throughput.py --threads 1 --e2e-steps 128

Prints a markdown table and writes benchmarks/results/vlm_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import envs
from envs.rendering import fast_rendering
from reward_learning.vlm import load_transformers_backend
from reward_learning.vlm_tiny import build_random_clip
from robotrl.config import load_config
from robotrl.trainer import Trainer

RESULTS = Path(__file__).parent / "results" / "vlm_throughput.json"
E2E_ENV = "textured/MountainCarContinuous-v0"
GOAL, BASELINE = "a car at the peak of the mountain, next to the yellow flag", "a car in the mountain"


def rendered_frames(env_id: str, count: int, size: int) -> tuple[np.ndarray, float]:
    """`count` frames of a random-action rollout at size x size, and the seconds per frame of rendering them."""
    kwargs = {"terminate_when_unhealthy": False} if "Humanoid" in env_id else {}
    env = envs.make(env_id, width=size, height=size, seed=0, **kwargs)
    fast_rendering(env)  # as the trainer renders (reward.vlm.fast_rendering defaults to true)
    try:
        env.reset()
        env.render()  # the first frame sets up the GL context
        frames, seconds = [], 0.0
        for _ in range(count):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
            start = time.perf_counter()
            frames.append(env.render())
            seconds += time.perf_counter() - start
    finally:
        env.close()
    return np.stack(frames), seconds / count


def model_seconds_per_frame(backend, frames: np.ndarray, batch: int) -> float:
    """Seconds per frame of embedding `frames` in chunks of `batch` (after one warm-up chunk)."""
    backend.embed_images(frames[:batch])
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        backend.embed_images(frames[i:i + batch])
    return (time.perf_counter() - start) / len(frames)


def e2e_rate(model_dir: Path, score_every: str, steps: int, precision: str, threads: int, runs: Path) -> dict:
    """Env steps/s of a SAC run on a CLIP reward (model build and load excluded)."""
    raw = {
        "name": f"vlm-bench-{score_every}", "seed": 0, "device": "cpu", "runs_dir": str(runs),
        "env": {"id": E2E_ENV},
        "algo": {"name": "sac", "hidden_sizes": [64, 64], "learning_starts": steps // 2, "batch_size": 64,
                 "buffer_size": 10_000, "train_every": 64, "gradient_steps": 16},
        "reward": {"source": "vlm", "vlm": {"model_path": str(model_dir), "goal_prompts": [GOAL],
                                            "baseline_prompts": [BASELINE], "alpha": 0.5, "batch_size": 64,
                                            "device": "cpu", "precision": precision, "score_every": score_every}},
        "train": {"total_steps": steps, "eval_every": 0, "eval_episodes": 1, "checkpoint_every": 10 * steps,
                  "log_every": steps, "torch_threads": threads, "save_buffer": False},
        "logging": {"tensorboard": False},
    }
    trainer = Trainer(load_config(None, [], base=raw), progress=False)
    trainer._evaluate = lambda: {}  # skip the end-of-run evaluation: 999 env steps that are not what we measure
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    metrics = trainer.rewarder.metrics()
    return {"steps_per_s": steps / seconds, "seconds": seconds, "model_calls": metrics["vlm/model_calls"],
            "render_s": metrics["vlm/render_s"], "model_s": metrics["vlm/model_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["textured/Humanoid-v5"])
    parser.add_argument("--batches", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a loaded 2-core box)")
    parser.add_argument("--e2e-steps", type=int, default=128, help="env steps of each end-to-end run (0 = skip)")
    parser.add_argument("--e2e-precision", default="bfloat16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="vlm-bench-"))
    models = {"vit-b-32": build_random_clip(work / "vit-b-32", "vit-b-32", [GOAL, BASELINE]),
              "tiny": build_random_clip(work / "tiny", "tiny", [GOAL, BASELINE])}
    count = max(args.batches)
    rows = []
    for env_id in args.envs:
        for model, directory in models.items():
            backend = load_transformers_backend(directory, "cpu")
            frames, render_s = rendered_frames(env_id, count, backend.image_size)
            for precision in args.precisions if model == "vit-b-32" else ["float32"]:
                backend.precision = precision
                for batch in args.batches:
                    model_s = model_seconds_per_frame(backend, frames, batch)
                    rows.append({"env": env_id, "model": model, "precision": precision, "batch": batch,
                                 "image_size": backend.image_size, "render_frames_per_s": 1 / render_s,
                                 "model_frames_per_s": 1 / model_s, "frames_per_s": 1 / (render_s + model_s),
                                 "render_share": render_s / (render_s + model_s)})
                    print(f"{env_id} {model} {precision} batch {batch}: {rows[-1]['frames_per_s']:.1f} frames/s "
                          f"(render {rows[-1]['render_share']:.0%})", flush=True)
    e2e = {}
    if args.e2e_steps:
        for model, precision in (("tiny", "float32"), ("vit-b-32", args.e2e_precision)):
            runs = {mode: e2e_rate(models[model], mode, args.e2e_steps, precision, args.threads, work / "runs")
                    for mode in ("episode", "step")}
            runs["ratio"] = runs["episode"]["steps_per_s"] / runs["step"]["steps_per_s"]
            e2e[f"{model}-{precision}"] = runs
            print(f"e2e {model} {precision}: batched {runs['episode']['steps_per_s']:.1f} steps/s, every step "
                  f"{runs['step']['steps_per_s']:.1f} steps/s, ratio {runs['ratio']:.1f}x", flush=True)
    print("\n| env | model | precision | batch | render+embed frames/s | model frames/s | render share |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['env']} | {r['model']} | {r['precision']} | {r['batch']} | {r['frames_per_s']:.1f} | "
              f"{r['model_frames_per_s']:.1f} | {r['render_share']:.0%} |")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": shlex.join([Path(sys.executable).name, *sys.argv]), "date": datetime.now(timezone.utc).isoformat(),
        "threads": args.threads, "loadavg": load, "throughput": rows, "end_to_end": e2e}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()

"""A training process killed with SIGKILL resumes from its last checkpoint without duplicated metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
import yaml

from robotrl.core import checkpoint as ckpt
from robotrl.logger import read_metrics
from robotrl.trainer import CHECKPOINT, Trainer

CHECKPOINT_EVERY = 300
TOTAL = 1500


def last_logged_step(path) -> int:
    if not path.exists():
        return -1
    records = read_metrics(path)
    return records[-1]["step"] if records else -1


def start_training(tiny_raw, tmp_path, env, total_steps: int, text: bool, **sections):
    """`robotrl train` on a tiny SAC config (plus config `sections`) in a subprocess; returns (run dir, metrics path,
    process)."""
    raw = tiny_raw("sac", train={"total_steps": total_steps, "checkpoint_every": CHECKPOINT_EVERY, "log_every": 20},
                   **sections)
    config_path = tmp_path / "cfg.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "robotrl.cli", "train", str(config_path), "--run-dir", str(run), "--no-progress"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=text)
    return run, run / "metrics.jsonl", process


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_then_resume(tiny_raw, tmp_path, headless_env):
    run, metrics, process = start_training(tiny_raw, tmp_path, headless_env, TOTAL, text=False)
    try:
        # kill it between two checkpoints, after it logged records that the checkpoint does not cover
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and process.poll() is None:
            step = last_logged_step(metrics)
            if (run / CHECKPOINT).exists() and step % CHECKPOINT_EVERY >= 100 and step < TOTAL - CHECKPOINT_EVERY:
                break
            time.sleep(0.02)
        assert process.poll() is None, f"training ended before it could be killed:\n{process.stdout.read().decode()}"
        assert time.monotonic() < deadline, "no checkpoint within 45 s"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL

    state = ckpt.load(run / CHECKPOINT)
    saved_step = state["step"]
    assert saved_step % CHECKPOINT_EVERY == 0 and 0 < saved_step < TOTAL
    killed_at = last_logged_step(metrics)
    assert killed_at > saved_step  # records after the checkpoint exist and must be dropped on resume
    assert not list(run.glob(".checkpoint.pt.*"))  # atomic save: no torn file beside the checkpoint

    trainer = Trainer.resume(run, progress=False)
    assert trainer.step == saved_step and trainer.episodes == state["episodes"] == saved_step // 200
    buffer = trainer.buffer
    assert len(buffer) == state["buffer"]["size"] == saved_step
    assert buffer.pos == state["buffer"]["pos"] and buffer.total_added == saved_step
    for key, value in state["buffer"]["storage"].items():
        assert torch.equal(buffer.storage[key][:saved_step], value), key
    assert trainer.agent.num_updates == state["agent"]["num_updates"] > 0
    assert list(trainer.recent_returns) == state["recent_returns"]

    result = trainer.train()
    assert result.steps == TOTAL and trainer.step == TOTAL
    records = read_metrics(metrics)
    steps = [r["step"] for r in records]
    assert steps == sorted(steps), "records after the checkpoint were not dropped"
    assert steps[-1] == TOTAL
    for key in ("train/critic_loss", "train/episode_return"):
        counts = Counter(r["step"] for r in records if key in r)
        assert max(counts.values()) == 1, f"{key} logged twice at some step: {counts.most_common(3)}"
    loss_steps = sorted(r["step"] for r in records if "train/critic_loss" in r)
    assert loss_steps == list(range(100, TOTAL + 1, 20))
    # episodes end every 200 steps; the resumed run starts a fresh episode at the checkpoint step
    expected_ends = list(range(200, saved_step + 1, 200)) + list(range(saved_step + 200, TOTAL + 1, 200))
    assert [r["step"] for r in records if "train/episode_return" in r] == expected_ends
    assert ckpt.load(run / CHECKPOINT)["step"] == TOTAL


def sigterm_between_checkpoints(run, metrics, process: subprocess.Popen) -> tuple[str, int]:
    """Send SIGTERM to a `start_training(..., text=True)` process once it logged 100 steps past a checkpoint; returns
    its output and the last step it had logged."""
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and process.poll() is None:
            logged = last_logged_step(metrics)
            if (run / CHECKPOINT).exists() and logged % CHECKPOINT_EVERY >= 100:
                break
            time.sleep(0.02)
        assert process.poll() is None and time.monotonic() < deadline
        os.kill(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 128 + signal.SIGTERM, output  # as a shell reports a SIGTERM
    return output, logged


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
def test_sigterm_saves_a_checkpoint_at_the_current_step(tiny_raw, tmp_path, headless_env):
    run, metrics, process = start_training(tiny_raw, tmp_path, headless_env, 20_000, text=True)
    output, logged = sigterm_between_checkpoints(run, metrics, process)
    assert "robotrl resume" in output
    assert "Traceback" not in output
    state = ckpt.load(run / CHECKPOINT)
    assert state["step"] >= logged and state["step"] % CHECKPOINT_EVERY != 0  # saved on the signal, not periodically
    assert abs(state["buffer"]["size"] - state["step"]) <= 1
    trainer = Trainer.resume(run, progress=False)
    assert trainer.step == state["step"] and len(trainer.buffer) == state["buffer"]["size"]
    trainer.vec.close()

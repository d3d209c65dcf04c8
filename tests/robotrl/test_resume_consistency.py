"""Stops and resumes keep a run consistent: checkpoints on any device, whole feedback rounds, metrics and TensorBoard
without duplicates or gaps, lost evaluations redone, buffer-less resumes, multi-task evaluation, critic resets."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
import torch

import robotrl.trainer as trainer_module
from robotrl.config import ConfigError, load_config
from robotrl.core import checkpoint as ckpt
from robotrl.core.buffers import ReplayBuffer
from robotrl.logger import read_metrics
from robotrl.preference import LABEL_STORE
from robotrl.trainer import CHECKPOINT, Trainer

# rounds at steps 200, 300, 400 (random steps until 100, state entropy until 200)
PREFERENCE = {"source": "preference", "preference": {
    "budget": 24, "queries_per_round": 8, "segment_length": 10, "query_every": 100, "unsup_steps": 100,
    "diagnostic_pairs": 0, "starc_samples": 0, "reset_updates": 2, "model": {"hidden_sizes": [16], "max_epochs": 2}}}


def eval_steps(run) -> list[int]:
    return [r["step"] for r in read_metrics(run / "metrics.jsonl") if "eval/return" in r]


def tensorboard_steps(run, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def stored_vs_model_rewards(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    """Every buffer row's stored reward and the current reward model's reward for it."""
    buffer = trainer.buffer
    rows = {k: v[: len(buffer)] for k, v in buffer.storage.items() if k != "reward"}
    with torch.no_grad():
        fresh = trainer.preference.reward_source(rows).reshape(-1)
    return buffer.storage["reward"][: len(buffer)], fresh


def signal_while_relabelling(monkeypatch, signals: list[int]) -> None:
    """Make the first relabel send `signals` to this process once its first 50-row chunk is written."""
    original = ReplayBuffer.relabel
    pending = list(signals)

    def relabel(buffer, reward_fn, chunk_size=None):
        def scored(chunk):
            while pending:
                os.kill(os.getpid(), pending.pop(0))
            return reward_fn(chunk)

        original(buffer, scored, 50)

    monkeypatch.setattr(ReplayBuffer, "relabel", relabel)


# ------------------------------------------------------------------------------------------------ devices
def test_checkpoints_load_on_the_cpu_whatever_the_run_device(tiny_config, tmp_path, monkeypatch):
    run = tmp_path / "run"
    Trainer(tiny_config("sac", train={"total_steps": 150}), run_dir=run, progress=False).train()
    trainer = Trainer(load_config(run / "config.yaml"), run, progress=False, resuming=True)
    trainer.device = torch.device("meta")  # stands for a GPU: nothing must be mapped to the run's device on load
    restored = []
    monkeypatch.setattr(ckpt, "set_rng_state", restored.append)
    trainer.load_checkpoint(run / CHECKPOINT)
    rng = restored[0]["torch"]
    assert rng.device.type == "cpu" and rng.dtype == torch.uint8  # what torch.set_rng_state accepts
    assert trainer.step == 150 and len(trainer.buffer) == 150
    trainer.vec.close()


def test_a_failing_rng_restore_is_not_reported_as_a_version_mismatch(tiny_config, tmp_path, monkeypatch):
    run = tmp_path / "run"
    Trainer(tiny_config("sac", train={"total_steps": 100}), run_dir=run, progress=False).train()

    def fail(state):
        raise TypeError("set_rng_state expects a torch.ByteTensor")

    monkeypatch.setattr(ckpt, "set_rng_state", fail)
    with pytest.raises(TypeError, match="ByteTensor"):
        Trainer.resume(run, progress=False)


# ------------------------------------------------------------------------------------------- feedback rounds
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_during_a_feedback_round_checkpoints_the_whole_round(tiny_config, tmp_path, monkeypatch, signum):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config("sac", reward=PREFERENCE, train={"total_steps": 600, "checkpoint_every": 1000}),
                      run_dir=run, progress=False)
    signal_while_relabelling(monkeypatch, [signum])
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.step == 200  # stopped right after the first round
    state = ckpt.load(run / CHECKPOINT)
    assert state["step"] == 200 and state["preference"]["rounds"] == 1
    monkeypatch.undo()
    resumed = Trainer.resume(run, progress=False)
    stored, fresh = stored_vs_model_rewards(resumed)
    assert len(stored) == 200
    torch.testing.assert_close(stored, fresh)  # every row relabelled by the model the checkpoint holds
    resumed.vec.close()
    resumed.preference.close()


def test_a_second_stop_during_a_round_keeps_the_checkpoint_from_before_it(tiny_config, tmp_path, monkeypatch):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config("sac", reward=PREFERENCE, train={"total_steps": 600, "checkpoint_every": 150}),
                      run_dir=run, progress=False)
    signal_while_relabelling(monkeypatch, [signal.SIGTERM, signal.SIGTERM])
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    state = ckpt.load(run / CHECKPOINT)
    assert state["step"] == 150 and state["preference"]["rounds"] == 0


def test_labels_from_another_run_still_reset_the_critic_at_the_first_round(tiny_config, tmp_path, monkeypatch):
    source = tmp_path / "first"
    Trainer(tiny_config("sac", reward=PREFERENCE, train={"total_steps": 200}), run_dir=source, progress=False).train()
    config = tiny_config("sac", [f"reward.preference.labels_from={source / LABEL_STORE}"], reward=PREFERENCE,
                         train={"total_steps": 300})
    trainer = Trainer(config, run_dir=tmp_path / "second", progress=False)
    assert trainer.preference.has_reward  # trained on the earlier labels before any round
    resets = []
    monkeypatch.setattr(trainer.agent, "reset_critic", lambda: resets.append(trainer.step))
    trainer.train()
    assert trainer.preference.rounds == 2 and resets == [200]


# ----------------------------------------------------------------------------------------------- run dirs
def test_a_new_run_refuses_a_used_run_dir(tiny_config, tiny_raw, tmp_path, capsys):
    import yaml

    from robotrl.cli import main

    run = tmp_path / "run"
    Trainer(tiny_config("sac", train={"total_steps": 100}), run_dir=run, progress=False).train()
    with pytest.raises(ConfigError, match="robotrl resume"):
        Trainer(tiny_config("sac"), run_dir=run, progress=False)
    (run / CHECKPOINT).unlink()  # the metrics alone belong to a run as well
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_raw("sac")))
    assert main(["train", str(path), "--run-dir", str(run), "--no-progress"]) == 2
    assert "robotrl resume" in capsys.readouterr().err


def test_a_resume_without_checkpoint_restarts_metrics_and_tensorboard(tiny_config, tmp_path):
    run = tmp_path / "run"
    config = tiny_config("sac", logging={"tensorboard": True}, train={"total_steps": 200, "eval_every": 100})
    Trainer(config, run_dir=run, progress=False).train()
    (run / CHECKPOINT).unlink()  # as if killed before its first checkpoint
    Trainer.resume(run, progress=False).train()
    records = read_metrics(run / "metrics.jsonl")
    assert records[0]["step"] < records[-1]["step"] == 200
    counts = Counter(r["step"] for r in records if "train/episode_return" in r)
    assert counts == {200: 1}
    assert eval_steps(run) == tensorboard_steps(run, "eval/return") == [100, 200]
    assert tensorboard_steps(run, "train/episode_return") == [200]


# ----------------------------------------------------------------------------------------------- evaluation
def test_tensorboard_keeps_what_was_logged_at_the_checkpoint_step(tiny_config, tmp_path):
    run = tmp_path / "run"
    config = tiny_config("sac", logging={"tensorboard": True}, train={"total_steps": 200, "eval_every": 100})
    Trainer(config, run_dir=run, progress=False).train()
    Trainer.resume(run, progress=False, overrides=("train.total_steps=300",)).train()
    assert eval_steps(run) == tensorboard_steps(run, "eval/return") == [100, 200, 300]


def test_resuming_a_finished_run_does_not_evaluate_again(tiny_config, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config("sac", train={"total_steps": 200, "eval_every": 100}), run_dir=run, progress=False).train()
    result = Trainer.resume(run, progress=False).train()
    assert result.steps == 200 and eval_steps(run) == [100, 200]


def test_an_evaluation_a_stop_interrupted_runs_on_resume(tiny_config, tmp_path, monkeypatch):
    run = tmp_path / "run"
    original = trainer_module.evaluate
    calls = []

    def evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C during the step-200 evaluation
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    trainer = Trainer(tiny_config("sac", train={"total_steps": 300, "eval_every": 100}), run_dir=run, progress=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert ckpt.load(run / CHECKPOINT)["step"] == 200
    Trainer.resume(run, progress=False).train()
    assert eval_steps(run) == [100, 200, 300]


def test_multi_task_evaluation_covers_every_task(tiny_config, tmp_path, monkeypatch):
    made = []
    original = trainer_module.make_eval_env
    monkeypatch.setattr(trainer_module, "make_eval_env",
                        lambda env_id, kwargs, *args: made.append(kwargs.get("task")) or original(env_id, kwargs,
                                                                                                  *args))
    config = tiny_config("sac", env_id="metaworld/MT10", env={"max_episode_steps": 10},
                         algo={"learning_starts": 50, "hidden_sizes": [16]},
                         train={"total_steps": 100, "eval_episodes": 10})
    result = Trainer(config, run_dir=tmp_path / "run", progress=False).train()
    assert made == list(range(10))
    tasks = {key for key in result.final_eval if key.startswith("eval/tasks/")}
    assert tasks == {f"eval/tasks/{i}/success_rate" for i in range(10)}
    assert result.final_eval["eval/success_rate"] == pytest.approx(
        sum(result.final_eval[key] for key in tasks) / 10)


# ------------------------------------------------------------------------------------------------- buffers
def test_a_resume_without_saved_buffer_refills_it_with_the_policy_before_updating(tiny_config, tmp_path,
                                                                                   monkeypatch):
    run = tmp_path / "run"
    config = tiny_config("sac", train={"total_steps": 200, "save_buffer": False})
    Trainer(config, run_dir=run, progress=False).train()
    resumed = Trainer.resume(run, progress=False, overrides=("train.total_steps=400",))
    assert resumed.step == 200 and len(resumed.buffer) == 0
    filled, update = [], resumed.agent.update
    monkeypatch.setattr(resumed.agent, "update", lambda batch: filled.append(len(resumed.buffer)) or update(batch))
    monkeypatch.setattr(resumed.adapter, "random", lambda *args: pytest.fail("random actions after a resume"))
    resumed.train()
    assert filled == list(range(100, 201))  # max(batch_size 32, learning_starts 100) rows, then every step

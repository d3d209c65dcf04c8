"""The command line: help, exit codes and messages for user errors, plot and config commands."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from robotrl.cli import main
from robotrl.plotting import series, smooth

COMMANDS = ["train", "resume", "eval", "plot", "envs", "config"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_config(tmp_path: Path, raw: dict, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_help_exits_zero_and_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert f"robotrl {command}" in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_train_with_bad_config_exits_2_with_message(tmp_path, tiny_raw, capsys):
    raw = tiny_raw("sac")
    raw["algo"]["batchsize"] = 64
    path = write_config(tmp_path, raw)
    assert main(["train", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "algo.batchsize" in err and "batch_size" in err and str(path) in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_train_with_bad_override_and_missing_file(tmp_path, tiny_raw, capsys):
    path = write_config(tmp_path, tiny_raw("sac"))
    assert main(["train", str(path), "algo.gamma=2", "--no-progress"]) == 2
    assert "algo.gamma" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_env_id_exits_2_listing_close_matches(tmp_path, tiny_raw, capsys):
    raw = tiny_raw("sac", env_id="Pendulm-v1")
    assert main(["train", str(write_config(tmp_path, raw)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Pendulm-v1" in err and "Pendulum-v1" in err


def test_unknown_env_id_through_trainer(tiny_config):
    import envs
    from robotrl.trainer import Trainer

    with pytest.raises(envs.UnknownEnvError, match="Did you mean: .*HalfCheetah-v5"):
        Trainer(tiny_config("sac", env_id="HalfCheetah-v4"), progress=False)


def test_off_policy_agent_on_discrete_env_is_a_clear_error(tmp_path, tiny_raw, capsys):
    raw = tiny_raw("sac", env_id="CartPole-v1")
    assert main(["train", str(write_config(tmp_path, raw)), "--no-progress"]) == 2
    assert "algo.name=ppo" in capsys.readouterr().err


def test_bad_env_kwarg_exits_2_with_message(tmp_path, tiny_raw, capsys):
    """A misspelt env kwarg is a user error like any other config mistake: exit 2 and a message, no traceback."""
    raw = tiny_raw("sac", env={"kwargs": {"gg": 9.81}})
    code = main(["train", str(write_config(tmp_path, raw)), "--no-progress"])
    assert code == 2
    assert "'gg'" in capsys.readouterr().err


def test_config_command_prints_resolved_config(capsys):
    config = Path(__file__).resolve().parents[2] / "configs" / "pendulum_sac.yaml"
    assert main(["config", str(config), "algo.tau=0.01"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["algo"]["tau"] == 0.01 and printed["algo"]["num_critics"] == 2 and printed["env"]["id"]


def test_envs_command_lists_ids(capsys):
    assert main(["envs"]) == 0
    ids = capsys.readouterr().out.split()
    assert "Pendulum-v1" in ids and "HalfCheetah-v5" in ids


def test_eval_of_missing_run_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(tmp_path / "nope"), "--episodes", "1"]) == 2
    assert "no run found" in capsys.readouterr().err


def test_eval_prints_returns(trained_pendulum_run, capsys):
    assert main(["eval", str(trained_pendulum_run), "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "eval/return=" in out and "over 2 episode(s)" in out


def test_plot_two_runs_writes_png(trained_pendulum_run, trained_cartpole_run, tmp_path, capsys):
    out = tmp_path / "plots" / "curves.png"
    code = main(["plot", str(trained_pendulum_run), str(trained_cartpole_run), "--out", str(out), "--smooth", "2",
                 "--title", "two runs"])
    assert code == 0
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000
    assert str(out) in capsys.readouterr().out


def test_plot_default_output_goes_to_first_run(trained_pendulum_run):
    assert main(["plot", str(trained_pendulum_run), "--metric", "train/critic_loss"]) == 0
    assert (trained_pendulum_run / "curves.png").read_bytes()[:8] == PNG_SIGNATURE


def test_plot_with_unknown_metric_exits_2(trained_pendulum_run, tmp_path, capsys):
    assert main(["plot", str(trained_pendulum_run), "--metric", "no/such", "--out", str(tmp_path / "x.png")]) == 2
    assert "no/such" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_series_reads_metric_in_step_order(trained_pendulum_run):
    steps, values = series(trained_pendulum_run, "train/episode_return")
    assert steps.tolist() == [200, 400]
    assert np.all(values < 0)


def test_smooth_is_a_trailing_moving_average():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(smooth(values, 1), values)
    np.testing.assert_allclose(smooth(values, 2), [1.0, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(smooth(values, 3), [1.0, 1.5, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(smooth(values, 10), [1.0, 1.5, 2.0, 2.5, 3.0])
    assert len(smooth(np.array([]), 3)) == 0


def test_train_then_resume_with_more_steps(tmp_path, tiny_raw, capsys):
    from robotrl.core import checkpoint as ckpt

    path = write_config(tmp_path, tiny_raw("sac", train={"total_steps": 200}))
    run = tmp_path / "run"
    # overrides may come after the options
    assert main(["train", str(path), "--run-dir", str(run), "--no-progress", "seed=3"]) == 0
    out = capsys.readouterr().out
    assert f"run: {run}" in out and "steps: 200" in out and "eval/return=" in out
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 3
    assert main(["resume", str(run), "train.total_steps=300", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "from step 200" in out and "steps: 300" in out
    assert ckpt.load(run / "checkpoint.pt")["step"] == 300


def test_runs_are_found_by_name_prefix_and_latest(tmp_path, tiny_raw, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = tiny_raw("sac", train={"total_steps": 100})
    raw["runs_dir"] = "runs"
    assert main(["train", str(write_config(tmp_path, raw)), "--no-progress"]) == 0
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("tiny-sac-")
    capsys.readouterr()
    for spec in ("latest", "tiny-sac", runs[0].name):
        assert main(["eval", spec, "--episodes", "1"]) == 0
        assert runs[0].name in capsys.readouterr().out
    assert main(["eval", "other-name", "--episodes", "1"]) == 2


@pytest.mark.parametrize("option", [["--episodes", "0"], ["--episodes", "-1"], ["--width", "0"], ["--height", "0"]])
def test_eval_rejects_counts_and_sizes_that_are_not_positive(trained_pendulum_run, option, capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", str(trained_pendulum_run), *option])
    assert info.value.code == 2 and "must be a positive integer" in capsys.readouterr().err


def test_policy_evaluate_needs_at_least_one_episode(trained_pendulum_run):
    from robotrl.policy import load_policy

    with pytest.raises(ValueError, match="episodes must be positive"):
        load_policy(trained_pendulum_run).evaluate(0)


def test_resume_eval_and_plot_find_runs_in_runs_dir(tmp_path, tiny_raw, capsys, monkeypatch):
    """Run names and `latest` are looked up in --runs-dir, for configs whose runs_dir is not runs/."""
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    raw = tiny_raw("sac", train={"total_steps": 100})
    raw["runs_dir"] = str(elsewhere)
    assert main(["train", str(write_config(tmp_path, raw)), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["resume", "latest", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no run found for 'latest'" in err and str(tmp_path / "runs") in err and "--runs-dir" in err
    assert main(["resume", "latest", "--runs-dir", str(elsewhere), "train.total_steps=200", "--no-progress"]) == 0
    assert "steps: 200" in capsys.readouterr().out
    assert main(["eval", "tiny-sac", "--runs-dir", str(elsewhere), "--episodes", "1"]) == 0
    assert main(["plot", "latest", "--runs-dir", str(elsewhere), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").exists()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_training_saves_a_checkpoint_and_exits_128_plus_the_signal(tmp_path, tiny_raw, capsys,
                                                                              monkeypatch, sig, code):
    from robotrl.trainer import CHECKPOINT, Trainer

    periodic = Trainer._periodic

    def interrupt_at_step_150(self, *args):
        if self.step >= 150:
            os.kill(os.getpid(), sig)  # Ctrl-C or `kill` while training
        periodic(self, *args)

    monkeypatch.setattr(Trainer, "_periodic", interrupt_at_step_150)
    # Python's own Ctrl-C handler, as in a terminal: a shell starts background jobs (e.g. CI) with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    run = tmp_path / "run"
    try:
        exit_code = main(["train", str(write_config(tmp_path, tiny_raw("sac"))), "--run-dir", str(run),
                          "--no-progress"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert exit_code == code
    assert f"interrupted; continue from the last checkpoint with `robotrl resume {run}`" in capsys.readouterr().err
    assert (run / CHECKPOINT).exists()


def test_interrupt_outside_training_does_not_promise_a_checkpoint(trained_pendulum_run, tmp_path, capsys,
                                                                  monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("robotrl.policy.load_policy", interrupt)
    monkeypatch.setattr("robotrl.plotting.plot_runs", interrupt)
    for argv in (["eval", str(trained_pendulum_run)], ["plot", str(trained_pendulum_run), "--out", "x.png"]):
        assert main(argv) == 130
        assert capsys.readouterr().err == "interrupted\n"


def test_missing_wandb_is_an_error_message_not_a_traceback(tmp_path, tiny_raw, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    raw = tiny_raw("sac", logging={"wandb": {"mode": "offline"}})
    assert main(["train", str(write_config(tmp_path, raw)), "--no-progress", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "wandb" in err and "Traceback" not in err


def test_error_exit_codes_keep_bugs_visible():
    from robotrl.cli import error_exit_code
    from robotrl.core.checkpoint import CheckpointError
    from robotrl.trainer import TrainingDiverged

    def wrapped_import_error() -> RuntimeError:
        try:
            try:
                import no_such_package  # noqa: F401
            except ImportError:
                raise RuntimeError("logging.wandb.mode is set but wandb is missing") from None
        except RuntimeError as err:
            return err

    assert error_exit_code(TrainingDiverged("nan")) == 3
    assert error_exit_code(FloatingPointError("NaN while relabelling")) == 3
    assert error_exit_code(CheckpointError("bad")) == 2 and error_exit_code(ValueError("bad")) == 2
    assert error_exit_code(wrapped_import_error()) == 2
    assert error_exit_code(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None


@pytest.mark.parametrize("error, code", [(FloatingPointError("reward function returned NaN"), 3),
                                         (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), None)])
def test_main_prints_expected_errors_and_reraises_bugs(trained_pendulum_run, capsys, monkeypatch, error, code):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("robotrl.policy.load_policy", fail)
    if code is None:
        with pytest.raises(type(error)):
            main(["eval", str(trained_pendulum_run)])
    else:
        assert main(["eval", str(trained_pendulum_run)]) == code
        assert capsys.readouterr().err == f"error: {error}\n"


def test_interrupt_exit_code_is_128_plus_the_signal_the_trainer_names():
    from robotrl.cli import interrupted_exit_code
    from robotrl.trainer import _ForcedStop, _Stop

    assert interrupted_exit_code(KeyboardInterrupt()) == 130  # Ctrl-C outside the trainer's handlers
    assert interrupted_exit_code(_Stop(15)) == 143
    assert interrupted_exit_code(_ForcedStop(15, again=True)) == 143
    assert interrupted_exit_code(_Stop(2)) == 130  # a Ctrl-C held back during a feedback round

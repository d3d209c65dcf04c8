"""`robotrl reward compare`: a distance table and a heatmap PNG for reward sources on random-policy steps of an env,
on a run's replay buffer, and with a saved reward model; clear errors for what cannot be compared."""

from __future__ import annotations

import torch

from reward_learning.models import RewardEnsemble, RewardModelConfig
from robotrl.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def table_row(out: str, name: str) -> list[float]:
    """The distances printed on `name`'s row of the table."""
    line = next(line for line in out.splitlines() if line.startswith(f"{name} "))
    return [float(v) for v in line.split()[1:]]


def test_compare_random_policy_steps_prints_a_table_and_writes_a_heatmap(tmp_path, capsys):
    out = tmp_path / "heat.png"
    assert main(["reward", "compare", "--env", "Pendulum-v1", "env", "components", "negated:env", "random",
                 "--samples", "600", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "STARC-VAL distances" in printed and "600 transitions of Pendulum-v1" in printed
    env_row = table_row(printed, "env")
    assert env_row[:3] == [0.0, 0.0, 1.0] and 0.1 < env_row[3] < 1.0  # components = env; negated is the max
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_compare_a_saved_model_with_bootstrap_intervals_on_discrete_actions(tmp_path, capsys):
    torch.manual_seed(0)
    model_path = tmp_path / "reward_model.pt"
    RewardEnsemble((4,), 2, RewardModelConfig(hidden_sizes=[8], ensemble_size=2), discrete_actions=True
                   ).save(model_path)
    argv = ["reward", "compare", "--env", "CartPole-v1", str(model_path), "negated:env", "random", "--rollouts", "5",
            "--bootstrap", "10", "--out", str(tmp_path / "h.png")]
    for method in ("starc_val", "epic"):  # the model and `random` are functions of obs/action, so EPIC works too
        sources = argv if method == "starc_val" else [a for a in argv if a != "negated:env"] + ["--method", "epic"]
        assert main(sources) == 0
        printed = capsys.readouterr().out
        assert "95% bootstrap intervals" in printed and "5 random-policy episodes" in printed


def test_compare_transitions_of_a_run_without_recorded_states(trained_pendulum_run, tmp_path, capsys):
    assert main(["reward", "compare", "--from-run", str(trained_pendulum_run), "env",
                 "components:torque_squared=-0.001", "--samples", "300", "--out", str(tmp_path / "h.png")]) == 0
    printed = capsys.readouterr().out
    assert "pendulum-sac's replay buffer" in printed and "gamma 0.99" in printed


def test_compare_errors_say_what_to_do(tmp_path, capsys):
    def error(*argv: str) -> str:
        assert main(["reward", "compare", "--env", "Pendulum-v1", "--samples", "50", "--out",
                     str(tmp_path / "h.png"), *argv]) == 2
        return capsys.readouterr().err

    message = error("env", "random", "--method", "epic")
    assert "'env' on transitions (s, A, S') that never happened" in message and "method='starc_val'" in message
    assert "unknown reward source 'reward.txt'" in error("env", "reward.txt")
    assert "unknown reward component(s) ['speed']" in error("env", "components:speed=1")
    assert "write name=weight" in error("env", "components:torque_squared")
    assert "given twice" in error("env", "env")

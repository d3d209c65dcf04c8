"""`robotrl reward compare`: a distance table and a heatmap PNG for reward sources on random-policy steps of an env,
on a run's replay buffer, with a saved reward model and with generated reward code; clear errors for what cannot be
compared."""

from __future__ import annotations

import re
import shutil
import textwrap

import pytest
import torch

from reward_learning.models import RewardEnsemble, RewardModelConfig
from robotrl.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


PENDULUM_REWARD = textwrap.dedent('''
    import numpy as np


    def compute_dense_reward(obs, action, next_obs, torque_squared=None):
        """Pendulum-v1's own reward: angle and speed before the step, clipped torque."""
        angle = np.arctan2(obs[:, 1], obs[:, 0])
        return -(np.square(angle) + 0.1 * np.square(obs[:, 2]) + 0.001 * torque_squared)
''')


def table_row(out: str, name: str) -> list[float]:
    """The distances printed on `name`'s row of the table."""
    line = next(line for line in out.splitlines() if line.startswith(f"{name} "))
    return [float(v) for v in line.split()[1:]]


def intervals(out: str) -> dict[tuple[str, str], tuple[float, float, float]]:
    """{(a, b): (distance, lower, upper)} from the printed bootstrap intervals."""
    found = re.findall(r"^  (\S+) ~ (\S+): ([\d.]+) \[([\d.]+), ([\d.]+)\]$", out, re.MULTILINE)
    return {(a, b): (float(d), float(lo), float(hi)) for a, b, d, lo, hi in found}


def test_compare_random_policy_steps_prints_a_table_and_writes_a_heatmap(tmp_path, capsys):
    out = tmp_path / "heat.png"
    assert main(["reward", "compare", "--env", "Pendulum-v1", "env", "components", "negated:env", "random",
                 "--samples", "600", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "STARC-VAL distances" in printed and "600 transitions of Pendulum-v1" in printed
    env_row = table_row(printed, "env")
    assert env_row[:3] == [0.0, 0.0, 1.0] and 0.1 < env_row[3] < 1.0  # components = env; negated is the max
    assert out.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("norm", ["l1", "linf"])
def test_compare_with_another_norm_keeps_the_invariances_and_changes_the_scale(tmp_path, capsys, norm):
    argv = ["reward", "compare", "--env", "Pendulum-v1", "env", "components", "negated:env", "random",
            "--samples", "600", "--out", str(tmp_path / "h.png")]
    assert main(argv) == 0
    l2_row = table_row(capsys.readouterr().out, "env")
    assert main([*argv, "--norm", norm]) == 0
    row = table_row(capsys.readouterr().out, "env")
    assert row[:3] == [0.0, 0.0, 1.0] and 0.0 < row[3] <= 1.0
    assert abs(row[3] - l2_row[3]) > 1e-3  # the random reward's distance depends on the norm


def test_epic_refuses_a_norm_other_than_l2(tmp_path, capsys):
    assert main(["reward", "compare", "--env", "Pendulum-v1", "random", "negated:random", "--method", "epic",
                 "--norm", "l1", "--out", str(tmp_path / "h.png")]) == 2
    assert "applies to starc_val only" in capsys.readouterr().err


def test_compare_a_saved_model_with_bootstrap_intervals_on_discrete_actions(tmp_path, capsys):
    torch.manual_seed(0)
    model, copy = str(tmp_path / "reward_model.pt"), str(tmp_path / "copy.pt")
    RewardEnsemble((4,), 2, RewardModelConfig(hidden_sizes=[8], ensemble_size=2), discrete_actions=True).save(model)
    shutil.copyfile(model, copy)
    argv = ["reward", "compare", "--env", "CartPole-v1", model, copy, "negated:env", "random", "--rollouts", "5",
            "--bootstrap", "10", "--out", str(tmp_path / "h.png")]
    for method in ("starc_val", "epic"):  # the model and `random` are functions of obs/action, so EPIC works too
        sources = argv if method == "starc_val" else [a for a in argv if a != "negated:env"] + ["--method", "epic"]
        assert main(sources) == 0
        printed = capsys.readouterr().out
        assert "95% bootstrap intervals" in printed and "5 random-policy episodes" in printed
        row = table_row(printed, model)
        assert row[0] == 0.0 and row[1] == 0.0 and 0.0 < row[-1] <= 1.0  # itself, its copy, random
        assert all(0.0 < d <= 1.0 for d in row[2:])
        pairs = intervals(printed)
        assert pairs[model, copy] == (0.0, 0.0, 0.0)
        distance, lower, upper = pairs[model, "random"]
        assert distance == row[-1] and 0.0 <= lower <= upper <= 1.0 and upper > 0.0


def test_compare_transitions_of_a_run_without_recorded_states(trained_pendulum_run, tmp_path, capsys):
    assert main(["reward", "compare", "--from-run", str(trained_pendulum_run), "env", "components", "negated:env",
                 "components:torque_squared=-0.001", "--samples", "300", "--out", str(tmp_path / "h.png")]) == 0
    printed = capsys.readouterr().out
    assert "pendulum-sac's replay buffer" in printed and "gamma 0.99" in printed
    env_row = table_row(printed, "env")
    assert env_row[:3] == [0.0, 0.0, 1.0] and 0.0 < env_row[3] < 1.0  # the torque term alone is neither


def test_compare_generated_reward_code(tmp_path, capsys):
    code = tmp_path / "reward.py"
    code.write_text(PENDULUM_REWARD)
    assert main(["reward", "compare", "--env", "Pendulum-v1", f"code:{code}", "env", "negated:env", "random",
                 "--samples", "600", "--out", str(tmp_path / "h.png")]) == 0
    row = table_row(capsys.readouterr().out, f"code:{code}")
    assert row[1] == pytest.approx(0.0, abs=1e-3) and row[2] == pytest.approx(1.0, abs=1e-3)  # env, negated env
    assert 0.1 < row[3] < 1.0


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
    assert f"code:{tmp_path / 'none.py'}: no reward-code file there" in error("env", f"code:{tmp_path / 'none.py'}")
    hostile = tmp_path / "hostile.py"
    hostile.write_text("import os\n\ndef compute_dense_reward(obs, action, next_obs):\n    return obs[:, 0]\n")
    assert f"code:{hostile} was rejected: line 1: import of 'os' is not allowed" in error("env", f"code:{hostile}")

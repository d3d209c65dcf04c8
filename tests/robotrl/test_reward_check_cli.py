"""`robotrl reward check FILE --env ID`: accepted reward code prints per-term statistics on random-policy transitions
and exits 0; rejected code (statically or at run time) prints the reason and exits 1. And the trainer runs on a
sandboxed reward like on any other reward source."""

from __future__ import annotations

import textwrap

from robotrl.cli import main

PENDULUM_REWARD = textwrap.dedent('''
    import numpy as np


    def compute_dense_reward(obs, action, next_obs, torque_squared=None):
        """Keep the pendulum upright and slow, with little torque."""
        angle = np.arctan2(next_obs[:, 1], next_obs[:, 0])
        upright = -np.square(angle)
        speed = -0.1 * np.square(next_obs[:, 2])
        effort = -0.001 * torque_squared
        return upright + speed + effort, {"upright": upright, "speed": speed, "effort": effort}
''')


def check(tmp_path, code: str, *options: str) -> int:
    path = tmp_path / "reward.py"
    path.write_text(code)
    return main(["reward", "check", str(path), "--env", "Pendulum-v1", "--samples", "300", *options])


def test_accepted_code_prints_statistics_of_every_term(tmp_path, capsys):
    assert check(tmp_path, PENDULUM_REWARD) == 0
    out = capsys.readouterr().out
    assert "accepted" in out and "300 random-policy transitions" in out
    assert "inputs       obs, action, next_obs, torque_squared" in out
    table = out.split("\nterm ", 1)[1].splitlines()[1:]
    rows = {line.rsplit(None, 4)[0]: [float(v) for v in line.split()[-4:]] for line in table}
    assert set(rows) == {"reward", "upright", "speed", "effort"}
    for mean, std, low, high in rows.values():
        assert low <= mean <= high and std >= 0 and high <= 0  # every term is a penalty
    assert rows["upright"][2] >= -3.1416 ** 2


def test_hostile_code_is_rejected_with_the_reason(tmp_path, capsys):
    hostile = "import subprocess\n\ndef compute_dense_reward(obs, action, next_obs):\n    return obs[:, 0]\n"
    assert check(tmp_path, hostile) == 1
    captured = capsys.readouterr()
    assert "rejected:" in captured.err and "line 1: import of 'subprocess' is not allowed" in captured.err
    assert "accepted" not in captured.out


def test_code_that_fails_in_the_sandbox_is_rejected(tmp_path, capsys):
    constant = "def compute_dense_reward(obs, action, next_obs):\n    return obs[:, 0] * 0\n"
    assert check(tmp_path, constant) == 1
    assert "the reward is constant (0) over all 300 sampled transitions" in capsys.readouterr().err
    looping = "def compute_dense_reward(obs, action, next_obs):\n    while True:\n        pass\n"
    assert check(tmp_path, looping, "--samples", "10", "--timeout", "0.5") == 1
    err = capsys.readouterr().err
    assert "exceeded the CPU time limit of 0.5 s" in err or "no answer within 1 s of wall-clock time" in err


def test_a_missing_file_is_a_usage_error(tmp_path, capsys):
    assert main(["reward", "check", str(tmp_path / "nope.py"), "--env", "Pendulum-v1"]) == 2
    assert "no reward code file" in capsys.readouterr().err


def test_an_agent_trains_on_sandboxed_reward_code(tiny_config, tmp_path):
    from reward_learning.sandbox import SandboxedReward
    from robotrl.trainer import Trainer

    config = tiny_config("sac", train={"total_steps": 200})
    with SandboxedReward(PENDULUM_REWARD, ["angle_squared", "angular_velocity_squared", "torque_squared"]) as reward:
        result = Trainer(config, run_dir=tmp_path / "run", reward_source=reward).train()
        assert result.steps == 200 and set(reward.last_terms) == {"upright", "speed", "effort"}
        assert reward.worker.failures == 0

"""`reward.source: code`: a reward-code file runs in the sandbox during training; the run keeps its own copy, which a
resumed run uses; bad files fail as config errors."""

from __future__ import annotations

import pytest
import torch

from robotrl.config import ConfigError
from robotrl.trainer import REWARD_CODE, Trainer

UPRIGHT = '''
import numpy as np

def compute_dense_reward(obs, action, next_obs, torque_squared=None):
    upright = next_obs[:, 0]                      # cos(theta): 1 when the pendulum is up
    effort = 0.01 * np.square(action).sum(axis=-1)
    return upright - effort, {"upright": upright, "effort": -effort}
'''


def code_config(tiny_config, path, steps: int = 300):
    return tiny_config("sac", reward={"source": "code", "code": {"path": str(path)}}, train={"total_steps": steps})


def test_training_on_reward_code_uses_the_sandboxed_reward_and_keeps_a_copy(tiny_config, tmp_path):
    source = tmp_path / "upright.py"
    source.write_text(UPRIGHT)
    run = tmp_path / "run"
    trainer = Trainer(code_config(tiny_config, source), run_dir=run, progress=False)
    trainer.train()
    stored = trainer.buffer.storage
    n = len(trainer.buffer)
    expected = stored["next_obs"][:n, 0] - 0.01 * stored["action"][:n].pow(2).sum(-1)
    torch.testing.assert_close(stored["reward"][:n], expected, atol=1e-5, rtol=0)
    assert (run / REWARD_CODE).read_text() == UPRIGHT
    source.write_text(UPRIGHT.replace("upright - effort", "-upright"))  # the original changes after the run started
    resumed = Trainer.resume(run, progress=False, overrides=("train.total_steps=400",))
    resumed.train()
    new = slice(n, len(resumed.buffer))
    stored = resumed.buffer.storage
    torch.testing.assert_close(stored["reward"][new], stored["next_obs"][new, 0]
                               - 0.01 * stored["action"][new].pow(2).sum(-1), atol=1e-5, rtol=0)


def test_a_new_run_in_a_used_run_directory_trains_on_the_code_its_config_names(tiny_config, tmp_path):
    first, second = tmp_path / "upright.py", tmp_path / "down.py"
    first.write_text(UPRIGHT)
    second.write_text(UPRIGHT.replace("upright - effort", "-upright"))
    run = tmp_path / "run"
    Trainer(code_config(tiny_config, first, steps=150), run_dir=run, progress=False).train()
    for name in ("metrics.jsonl", "checkpoint.pt"):  # a new run refuses a folder holding a run: keep only the code
        (run / name).unlink()
    trainer = Trainer(code_config(tiny_config, second, steps=150), run_dir=run, progress=False)
    trainer.train()
    assert (run / REWARD_CODE).read_text() == second.read_text()
    stored, n = trainer.buffer.storage, len(trainer.buffer)
    torch.testing.assert_close(stored["reward"][:n], -stored["next_obs"][:n, 0], atol=1e-5, rtol=0)


def test_bad_reward_code_is_a_config_error(tiny_config, tmp_path):
    hostile = tmp_path / "hostile.py"
    hostile.write_text("import os\ndef compute_dense_reward(obs, action, next_obs):\n    return obs[:, 0]\n")
    with pytest.raises(ConfigError, match="import of 'os' is not allowed"):
        Trainer(code_config(tiny_config, hostile), run_dir=tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="no reward-code file"):
        Trainer(code_config(tiny_config, tmp_path / "missing.py"), run_dir=tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="source: code needs code.path"):
        tiny_config("sac", reward={"source": "code"})

"""The sandbox for LLM-written reward code: a corpus of hostile programs is rejected statically or stopped at run time
without touching files, the environment or the network; the OS limits hold even for code that got past the checker;
valid Text2Reward-style code computes the same numbers as in-process; bad outputs are rejected with a clear message;
a failed worker is replaced on the next call."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
from hostile_programs import PROGRAMS, Hostile

from reward_learning import RewardSource
from reward_learning.code_check import RewardCodeError, check_code
from reward_learning.sandbox import WORKER_FILE, SandboxedReward, SandboxLimits

LIMITS = SandboxLimits(cpu_seconds=0.5, wall_seconds=4.0, memory_mb=512)
COMPONENTS = ("distance", "control_cost")


def make_batch(n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(n, 4, generator=g), "action": torch.rand(n, 2, generator=g) * 2 - 1,
            "next_obs": torch.randn(n, 4, generator=g) * 0.3, "env_reward": torch.randn(n, generator=g),
            "components": torch.randn(n, 2, generator=g), "terminated": torch.rand(n, generator=g) < 0.1}


@pytest.fixture
def listener():
    """A loopback TCP listener; after the test it must not have received a connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    with pytest.raises(BlockingIOError):
        server.accept()
    server.close()


@pytest.fixture(autouse=True)
def untouched(tmp_path, listener):
    """Files (a canary in tmp_path, the cwd listing) and os.environ are the same after the test."""
    canary = tmp_path / "canary.txt"
    canary.write_text("intact")
    cwd, listing, environ = os.getcwd(), sorted(os.listdir()), environment()
    tmp_listing = sorted(os.listdir(tmp_path))
    yield canary
    assert canary.read_text() == "intact"
    assert sorted(os.listdir(tmp_path)) == tmp_listing
    assert os.getcwd() == cwd and sorted(os.listdir(cwd)) == listing
    assert environment() == environ


def environment() -> dict[str, str]:
    """os.environ without the variable pytest itself updates per test phase."""
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def run_code(code: str, batch: dict[str, torch.Tensor] | None = None, **kwargs) -> tuple[torch.Tensor, dict]:
    """Evaluate reward code once in the sandbox on `batch` (default: make_batch())."""
    with SandboxedReward(code, COMPONENTS, limits=kwargs.pop("limits", LIMITS), **kwargs) as reward:
        return reward.evaluate(make_batch() if batch is None else batch)


def test_the_corpus_is_large_and_covers_every_class():
    names = [p.name for p in PROGRAMS]
    assert len(names) >= 50 and len(set(names)) == len(names)
    assert {p.stopped_by for p in PROGRAMS} == {"static", "runtime", "timeout", "output"}


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_hostile_program_is_stopped(program: Hostile):
    if program.stopped_by == "static":
        with pytest.raises(RewardCodeError, match=program.reason) as info:
            check_code(program.code)
        assert info.value.kind == "static"
        with pytest.raises(RewardCodeError, match=program.reason):
            SandboxedReward(program.code, COMPONENTS)
        return
    check_code(program.code)  # passes the checker: the run-time limits must stop it
    with pytest.raises(RewardCodeError, match=program.reason) as info:
        run_code(program.code)
    assert info.value.kind == program.stopped_by


ESCAPE_ATTEMPTS = r"""
import importlib.util, json, os, resource, socket, subprocess, sys
spec = importlib.util.spec_from_file_location("worker", sys.argv[1])
worker = importlib.util.module_from_spec(spec)
sys.modules["worker"] = worker
spec.loader.exec_module(worker)
canary, port = sys.argv[2], int(sys.argv[3])
worker.apply_limits({"lifetime_cpu_seconds": 30, "memory_mb": 256})

def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=1)
    s.sendall(b"leak")

attempts = {
    "overwrite canary": lambda: open(canary, "w").write("pwned"),
    "new file": lambda: os.open(canary + ".new", os.O_CREAT | os.O_WRONLY),
    "read a file": lambda: open("/etc/hostname").read(),
    "connect to loopback": connect,
    "fork": os.fork,
    "shell": lambda: subprocess.run(["touch", canary + ".shell"]),
    "os.system": lambda: os.system("touch " + canary + ".system") == 0 or 1 / 0,
    "raise the fd limit": lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)),
    "allocate 1 GB": lambda: bytearray(1 << 30),
}
results = {}
for name, attempt in attempts.items():
    try:
        attempt()
        results[name] = "succeeded"
    except BaseException as err:
        results[name] = type(err).__name__
results["uid"] = os.getuid()
print(json.dumps(results))
"""


def test_os_limits_hold_for_code_that_escaped_the_checker(untouched, listener):
    """The third layer on its own: after `apply_limits`, real os/socket/subprocess calls all fail."""
    port = listener.getsockname()[1]
    done = subprocess.run([sys.executable, "-I", "-c", ESCAPE_ATTEMPTS, str(WORKER_FILE), str(untouched), str(port)],
                          capture_output=True, text=True, timeout=60, cwd=untouched.parent)
    results = json.loads(done.stdout)
    uid = results.pop("uid")
    assert all(outcome != "succeeded" for outcome in results.values()), results
    assert results["allocate 1 GB"] == "MemoryError"
    if os.geteuid() == 0:
        assert uid == 65534  # root drops to nobody, so the limits cannot be raised again


TEXT2REWARD_STYLE = '''
import numpy as np
from math import pi
from typing import Dict, Tuple

GOAL = np.array([0.5, -0.25])


def compute_dense_reward(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, terminated=None,
                         control_cost=None) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Reach the goal, then stay still there; penalise large actions (staged, as in Text2Reward's examples)."""
    end_effector = next_obs[:, :2]
    distance = np.linalg.norm(end_effector - GOAL, axis=-1)
    reaching = 1 - np.tanh(5.0 * distance)
    at_goal = distance < 0.3
    still = np.linalg.norm(next_obs[:, 2:4], axis=-1) < 0.3
    staged = np.where(at_goal & still, 2.25, reaching + 0.25 * at_goal)
    action_penalty = -0.1 * np.mean(np.square(action), axis=-1)
    heading = np.cos(np.arctan2(end_effector[:, 1], end_effector[:, 0]) - pi / 4)
    total = staged + action_penalty + 0.01 * heading - 0.5 * terminated - 0.01 * control_cost
    return total, {"staged": staged, "action_penalty": action_penalty, "heading": heading, "bonus": 0.0}
'''


def test_text2reward_style_code_matches_in_process_evaluation():
    batch = make_batch(256)
    with SandboxedReward(TEXT2REWARD_STYLE, COMPONENTS, limits=LIMITS) as reward:
        assert isinstance(reward, RewardSource)
        assert reward.inputs == ["terminated", "control_cost"]
        assert reward.needs == {"obs", "action", "next_obs", "terminated", "components"}
        total = reward(batch)
        terms = reward.last_terms
        assert reward.describe()["code_sha256"]
    namespace: dict = {}
    exec(TEXT2REWARD_STYLE, namespace)  # the trusted reference: the same function, in this process
    arrays = {k: batch[k].numpy() for k in ("obs", "action", "next_obs")}
    expected, expected_terms = namespace["compute_dense_reward"](
        **arrays, terminated=batch["terminated"].numpy(), control_cost=batch["components"][:, 1].numpy())
    assert total.shape == (256,) and total.dtype == torch.float32
    np.testing.assert_array_equal(total.numpy(), expected.astype(np.float32))
    assert set(terms) == {"staged", "action_penalty", "heading", "bonus"}
    for name, value in expected_terms.items():
        np.testing.assert_array_equal(terms[name].numpy(), np.broadcast_to(np.float32(value), (256,)))
    assert len(set(np.round(terms["staged"].numpy(), 3))) > 2  # the batch reaches several stages


def test_named_inputs_come_from_the_env_and_missing_ones_are_errors():
    takes_all = "def compute_dense_reward(obs, action, next_obs, **named):\n    return named['distance'] * 2\n"
    batch = make_batch(8)
    with SandboxedReward(takes_all, COMPONENTS, limits=LIMITS) as reward:
        assert reward.inputs == ["terminated", *COMPONENTS]
        torch.testing.assert_close(reward(batch), batch["components"][:, 0] * 2)
    with pytest.raises(RewardCodeError, match="requires 'speed', which this env does not provide"):
        SandboxedReward("def compute_dense_reward(obs, action, next_obs, speed):\n    return speed\n", COMPONENTS)
    scalar = "def compute_dense_reward(obs, action, next_obs):\n    return float(obs[0, 0]) + math.pi\n"
    assert run_code(scalar, make_batch(1))[0].item() == pytest.approx(make_batch(1)["obs"][0, 0].item() + math.pi)


@pytest.mark.parametrize(("body", "reason"), [
    ("return obs[:, 0] * np.nan", r"the reward is not finite for 64 of 64 transitions \(first: index 0, value nan\)"),
    ("return np.log(np.abs(obs[:, 0]) * (obs[:, 0] > 0))", "the reward is not finite for .* value -inf"),
    ("return obs[:, 0], {'ratio': obs[:, 0] / 0.0}", "term 'ratio' is not finite"),
    ("return np.linalg.norm(next_obs - obs)", r"the reward has shape \(\); expected \(64,\).*axis=-1"),
    ("return obs", r"the reward has 256 values, more than the batch of 64"),
    ("return obs[:, :1]", r"the reward has shape \(64, 1\); expected \(64,\)"),
    ("return obs[:, 0], [obs]", "terms must be a dict"),
    ("return obs[:, 0] * 0 + 1.5", r"the reward is constant \(1.5\) over all 64 sampled transitions"),
])
def test_bad_outputs_are_rejected_with_a_clear_message(body: str, reason: str):
    code = f"def compute_dense_reward(obs, action, next_obs):\n    {body}\n"
    with pytest.raises(RewardCodeError, match=reason) as info:
        run_code(code, reject_constant=True)
    assert info.value.kind == "output"


def test_a_constant_reward_is_allowed_unless_asked_to_reject_it():
    reward, _ = run_code("def compute_dense_reward(obs, action, next_obs):\n    return obs[:, 0] * 0\n")
    assert torch.equal(reward, torch.zeros(64))


STUCK_ON_ZEROS = "def compute_dense_reward(obs, action, next_obs):\n    while obs.sum() == 0:\n        pass\n" \
                 "    return obs[:, 0] / action[:, 0]\n"


def test_failed_worker_is_replaced_on_the_next_call():
    good = make_batch(16)
    zeros = {k: torch.zeros_like(v) for k, v in good.items()}
    with SandboxedReward(STUCK_ON_ZEROS, COMPONENTS, limits=LIMITS) as reward:
        first = reward(good)
        pid = reward.worker.pid
        os.kill(pid, signal.SIGKILL)  # a crash between calls: the next call starts a new worker transparently
        os.waitpid(pid, 0)
        torch.testing.assert_close(reward(good), first)
        assert reward.worker.pid != pid
        killer = threading.Timer(0.3, os.kill, (reward.worker.pid, signal.SIGKILL))
        killer.start()  # a crash in the middle of a call: reported, and the next call starts a new worker
        with pytest.raises(RewardCodeError, match="the worker was killed by SIGKILL while evaluating") as info:
            reward(zeros)
        killer.join()
        assert info.value.kind == "crash" and not reward.worker.alive
        torch.testing.assert_close(reward(good), first)
        pid = reward.worker.pid
        with pytest.raises(RewardCodeError, match="line 4: ZeroDivisionError|not finite"):
            reward({**good, "action": torch.zeros_like(good["action"]), "obs": good["obs"].abs() + 1})
        assert reward.worker.pid == pid  # an exception in the code does not cost the worker
        assert reward.worker.failures == 1


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
@pytest.mark.parametrize("during", ["a call", "the worker's start"])
def test_an_exchange_interrupted_by_a_signal_stops_the_worker_and_the_next_call_gets_its_own_answer(during: str):
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    good = make_batch(16)
    with SandboxedReward(STUCK_ON_ZEROS, COMPONENTS, limits=LIMITS) as reward:
        first = reward(good)
        previous = signal.signal(signal.SIGALRM, interrupt)
        try:  # e.g. SIGTERM to a trainer while it waits for a reply, or while a dead worker is being restarted
            if during == "a call":
                signal.setitimer(signal.ITIMER_REAL, 0.1)
                with pytest.raises(KeyboardInterrupt):
                    reward({k: torch.zeros_like(v) for k, v in good.items()})
            else:
                signal.setitimer(signal.ITIMER_REAL, 0.02)  # the worker takes ~0.2 s to load
                with pytest.raises(KeyboardInterrupt):
                    reward.worker.start()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert not reward.worker.alive  # its pipes may hold half an exchange: never read a stale reply
        torch.testing.assert_close(reward(good), first)
        torch.testing.assert_close(reward({**good, "obs": 2 * good["obs"]}), 2 * first)  # in step, not one behind


@pytest.mark.parametrize(("limits", "reason"), [
    (SandboxLimits(cpu_seconds=0.2, wall_seconds=60.0), "exceeded the CPU time limit of 0.2 s"),
    (SandboxLimits(cpu_seconds=60.0, wall_seconds=1.0), "no answer within 1 s of wall-clock time"),
])
def test_cpu_and_wall_clock_limits_each_stop_a_busy_loop(limits: SandboxLimits, reason: str):
    with pytest.raises(RewardCodeError, match=reason):
        run_code(STUCK_ON_ZEROS, {k: torch.zeros_like(v) for k, v in make_batch(4).items()}, limits=limits)


def test_runtime_errors_name_the_line_in_the_reward_code():
    code = textwrap.dedent("""
        def helper(x):
            return x[:, 10]

        def compute_dense_reward(obs, action, next_obs):
            return helper(obs)
    """)
    with pytest.raises(RewardCodeError, match=re.escape("line 3: IndexError: index 10 is out of bounds")):
        run_code(code)

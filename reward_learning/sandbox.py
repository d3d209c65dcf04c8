"""Run LLM-written reward code (Text2Reward / Eureka style) in a sandbox, as a reward source every agent trains on.

The reference implementations `exec` generated code in the trainer's own process with its globals and no limits; here
code is checked statically (`reward_learning.code_check`), then run in a separate, resource-limited worker process.

Contract of reward code::

    import numpy as np                      # optional: np and math are always bound

    def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
        distance = np.linalg.norm(next_obs[:, :2], axis=-1)
        action_cost = 0.1 * np.square(action).sum(axis=-1)
        return -distance - action_cost, {"distance": -distance, "action_cost": -action_cost}

- The function is vectorised over a batch of transitions: `obs` and `next_obs` are float arrays [batch, *obs_shape],
  `action` is [batch, action_dim] as the agent stores it (a discrete action is its index).
- Parameters after `next_obs` name extra inputs, each [batch]: `terminated` (bool) and the env's reward components by
  their declared names. Declare the ones used (a default makes one optional), or take `**named` to receive all.
- It returns the reward, or `(reward, terms)` where `terms` maps names (strings) to the reward's components. The reward
  is what agents train on and must have shape [batch] (a scalar only when batch is 1); each term is [batch] or a scalar
  and is reported for logging, not added. All values must be finite; with `reject_constant` the reward must also vary
  over the batch (a constant reward teaches nothing).
- Allowed Python: see `reward_learning.code_check` (numpy and math allow-lists, a small set of builtins, no imports but
  numpy/math/typing, no names or attributes starting with an underscore, no classes/decorators/try/raise/yield).

Execution: one persistent worker process per reward source (the interpreter in isolated mode loading only
`code_check.py` and numpy, in an empty temporary directory, with a minimal environment and single-threaded BLAS). Before
any reward code runs, the worker limits its CPU time (per call and over its lifetime), address space, file size (0),
processes (0) and file descriptors (no new ones: no files, sockets or pipes can be opened), drops root to `nobody`, and
silences stderr. The parent kills it after a wall-clock timeout and caps the size of its replies, which are JSON plus
raw float64 arrays (never pickles). A worker that failed, or whose call was interrupted (a stop signal), is
restarted on the next call. Not done: no seccomp filter or namespaces, so code that got past both the checker and the
restricted globals, in a worker of a non-root user, could still rename or remove that user's files (calls that need no
new file descriptor).

Unlike Text2Reward's `compute_dense_reward(self, action, obs)` the function sees no env object: it gets arrays, a
batch at a time, so it can relabel replay buffers and be compared with other reward sources. `robotrl reward check`
runs a file through all of this on transitions of an env.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from reward_learning.code_check import (
    DTYPES,
    CheckedCode,
    RewardCodeError,
    check_code,
    read_message,
    write_message,
)
from reward_learning.sources import RewardSource, Transitions

WORKER_FILE = Path(__file__).with_name("code_check.py")
BOOTSTRAP = ("import importlib.util, sys\n"
             "spec = importlib.util.spec_from_file_location('reward_code_worker', sys.argv[1])\n"
             "module = importlib.util.module_from_spec(spec)\n"
             "sys.modules[spec.name] = module\n"
             "spec.loader.exec_module(module)\n"
             "module.serve()\n")
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
ERROR_KINDS = frozenset({"static", "runtime", "output"})


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of a reward-code worker. `cpu_seconds` and `wall_seconds` bound each call (and loading the
    code); `lifetime_cpu_seconds` is the worker's hard CPU cap (it is replaced before reaching it)."""

    cpu_seconds: float = 5.0
    wall_seconds: float = 10.0
    start_seconds: float = 60.0
    memory_mb: int = 1024
    lifetime_cpu_seconds: int = 3600
    max_terms: int = 32
    max_input_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        bad = [f"{k}={v}" for k, v in asdict(self).items() if not v > 0]
        if bad:
            raise ValueError(f"sandbox limits must be positive: {', '.join(bad)}")


class SandboxWorker:
    """A persistent child process that runs one checked reward program on batches of arrays (one call at a time: not
    for use from several threads at once)."""

    def __init__(self, checked: CheckedCode, limits: SandboxLimits | None = None) -> None:
        self.checked = checked
        self.limits = limits or SandboxLimits()
        self._state: dict = {"process": None, "cwd": None}
        weakref.finalize(self, _stop, self._state)
        self.failures = 0

    @property
    def pid(self) -> int | None:
        """Process id of the running worker, if any."""
        process = self._state["process"]
        return None if process is None else process.pid

    @property
    def alive(self) -> bool:
        process = self._state["process"]
        return process is not None and process.poll() is None

    def start(self) -> None:
        """Start the worker and load the code; load-time errors raise `RewardCodeError`."""
        _stop(self._state)
        cwd = tempfile.mkdtemp(prefix="reward-code-")
        process = subprocess.Popen([sys.executable, "-I", "-c", BOOTSTRAP, str(WORKER_FILE)], cwd=cwd, env=CHILD_ENV,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
        self._state.update(process=process, cwd=cwd)
        os.set_blocking(process.stdin.fileno(), False)
        limits = asdict(self.limits)
        deadline = time.monotonic() + self.limits.start_seconds
        reply, _ = self._exchange({"source": self.checked.source, "limits": limits}, None, 0, deadline,
                                  "starting the worker and loading the code", self.limits.start_seconds)
        if reply.get("status") != "ok":
            _stop(self._state)  # the worker exits after a failed load
        self._raise_for(reply)

    def call(self, arrays: Mapping[str, np.ndarray], named: Sequence[str]) -> dict[str, np.ndarray]:
        """Evaluate the code on one batch: `arrays` holds obs, action, next_obs and the `named` inputs. Returns the
        raw outputs ("reward", "term:<name>"); user-code errors, timeouts and crashes raise `RewardCodeError`."""
        if not self.alive:
            self.start()
        size = sum(a.nbytes for a in arrays.values())
        if size > self.limits.max_input_bytes:
            raise ValueError(f"a batch of {size} bytes exceeds the sandbox's max_input_bytes "
                             f"({self.limits.max_input_bytes}); evaluate it in smaller batches")
        batch = len(arrays["obs"])
        max_bytes = (1 + self.limits.max_terms) * max(batch, 1) * 8
        deadline = time.monotonic() + self.limits.wall_seconds
        reply, outputs = self._exchange({"named": list(named)}, arrays, max_bytes, deadline, "evaluating a batch",
                                        self.limits.wall_seconds)
        self._raise_for(reply)
        cpu = reply.get("cpu")
        if isinstance(cpu, (int, float)) and cpu > self.limits.lifetime_cpu_seconds - 2 * self.limits.cpu_seconds:
            _stop(self._state)  # near its hard CPU cap: the next call starts a fresh worker
        return outputs

    def _exchange(self, message: dict, arrays: Mapping[str, np.ndarray] | None, max_bytes: int, deadline: float,
                  doing: str, seconds: float) -> tuple[dict, dict[str, np.ndarray]]:
        """Send one message to the worker and read its reply. Any failure or interruption (e.g. a stop signal) stops
        the worker, whose pipes may hold half a message: the next call starts a fresh one rather than read a stale
        reply."""
        process = self._state["process"]
        try:
            write_message(process.stdin.fileno(), message, arrays, deadline)
            return read_message(process.stdout.fileno(), max_bytes, deadline)
        except (TimeoutError, EOFError, OSError, ValueError) as err:
            raise self._failure(err, doing, seconds) from None
        except BaseException:
            _stop(self._state)
            raise

    def _raise_for(self, reply: dict) -> None:
        if reply.get("status") == "ok":
            return
        message, kind = str(reply.get("message", "the worker reported an error"))[:2000], reply.get("kind")
        raise RewardCodeError(message, kind=kind if isinstance(kind, str) and kind in ERROR_KINDS else "runtime")

    def _failure(self, err: BaseException, doing: str, seconds: float) -> RewardCodeError:
        """Stop the worker and describe why it failed: wall-clock timeout, CPU limit, crash or a garbled reply."""
        self.failures += 1
        process = self._state["process"]
        status = None
        if not isinstance(err, TimeoutError):
            try:
                status = process.wait(timeout=2)  # it closed the pipe because it is dying: learn how
            except subprocess.TimeoutExpired:
                pass
        _kill(process)
        if isinstance(err, TimeoutError):
            reason, kind = f"no answer within {seconds:g} s of wall-clock time", "timeout"
        elif status == -signal.SIGXCPU:
            reason, kind = f"exceeded the CPU time limit of {self.limits.cpu_seconds:g} s", "timeout"
        elif status is not None and status < 0:
            reason, kind = f"the worker was killed by {signal.Signals(-status).name}", "crash"
        elif status:
            reason, kind = f"the worker exited with status {status}{_stderr_tail(process)}", "crash"
        else:
            reason, kind = f"the worker's reply was unreadable ({type(err).__name__}: {err})", "crash"
        _stop(self._state)
        return RewardCodeError(f"{reason} while {doing}; the worker was stopped (it restarts on the next call)",
                               kind=kind)

    def close(self) -> None:
        """Stop the worker (it is also stopped when this object is garbage-collected or Python exits)."""
        _stop(self._state)


def _kill(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
    if process is not None:
        process.wait()


def _stop(state: dict) -> None:
    """Kill the worker of `state` (if any), close its pipes and remove its directory."""
    process, cwd = state.get("process"), state.get("cwd")
    if process is not None:
        _kill(process)
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()
    if cwd is not None:
        shutil.rmtree(cwd, ignore_errors=True)
    state.update(process=None, cwd=None)


def _stderr_tail(process: subprocess.Popen) -> str:
    """The end of what a worker printed before it silenced stderr (startup failures), for the error message."""
    os.set_blocking(process.stderr.fileno(), False)
    try:
        text = (os.read(process.stderr.fileno(), 1 << 16) or b"").decode(errors="replace").strip()
    except BlockingIOError:
        return ""
    return f": {text[-1000:]}" if text else ""


def validate_outputs(outputs: Mapping[str, np.ndarray], batch: int, reject_constant: bool = False
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(reward [batch], terms {name: [batch]}) from a worker's outputs, or `RewardCodeError` saying what is wrong: a
    wrong shape, a non-finite value, or (with `reject_constant`) a reward that is the same for the whole batch."""
    if "reward" not in outputs:
        raise RewardCodeError("the worker returned no reward", kind="output")
    reward = _per_transition(outputs["reward"], "the reward", batch, scalar_ok=batch == 1)
    terms = {key[5:]: _per_transition(value, f"term '{key[5:]}'", batch, scalar_ok=True)
             for key, value in outputs.items() if key.startswith("term:")}
    if reject_constant and batch > 1 and np.ptp(reward) == 0:
        raise RewardCodeError(f"the reward is constant ({reward[0]:g}) over all {batch} sampled transitions; a reward "
                              f"that does not vary gives no learning signal", kind="output")
    return reward, terms


def _per_transition(value: np.ndarray, what: str, batch: int, scalar_ok: bool) -> np.ndarray:
    if value.shape != (batch,):
        if not (scalar_ok and value.ndim == 0):
            raise RewardCodeError(f"{what} has shape {tuple(value.shape)}; expected ({batch},), one value per "
                                  f"transition (the code must be vectorised over the batch: reduce with axis=-1, "
                                  f"e.g. np.linalg.norm(x, axis=-1))", kind="output")
        value = np.broadcast_to(value, (batch,))
    bad = np.flatnonzero(~np.isfinite(value))
    if len(bad):
        raise RewardCodeError(f"{what} is not finite for {len(bad)} of {batch} transitions (first: index {bad[0]}, "
                              f"value {value[bad[0]]})", kind="output")
    return value


class SandboxedReward(RewardSource):
    """LLM-written reward code run in a sandboxed worker (see the module docstring for the contract). The total is
    the reward; the named terms of the last batch are in `last_terms` for logging."""

    name = "reward_code"

    def __init__(self, code: str, component_names: Sequence[str] = (), *, limits: SandboxLimits | None = None,
                 reject_constant: bool = False, origin: str | None = None) -> None:
        self.checked = check_code(code)
        self.component_names = list(component_names)
        self.inputs = _named_inputs(self.checked, ["terminated", *self.component_names])
        self.reject_constant = reject_constant
        self.origin = origin
        self.needs = frozenset({"obs", "action", "next_obs"}
                               | ({"terminated"} & set(self.inputs))
                               | ({"components"} if set(self.inputs) & set(self.component_names) else set()))
        self.worker = SandboxWorker(self.checked, limits)
        self.worker.start()
        self.last_terms: dict[str, torch.Tensor] = {}

    @classmethod
    def from_file(cls, path: str | Path, component_names: Sequence[str] = (), **kwargs: object) -> SandboxedReward:
        """Load reward code from a file."""
        return cls(Path(path).read_text(), component_names, origin=str(path), **kwargs)

    def arrays(self, batch: Transitions) -> dict[str, np.ndarray]:
        """The numpy inputs of the code for a batch: obs, action, next_obs and the named inputs it declares."""
        out = {key: _numpy(batch[key]) for key in ("obs", "action", "next_obs")}
        for name in self.inputs:
            if name == "terminated":
                out[name] = _numpy(batch["terminated"].bool())
            else:
                out[name] = _numpy(batch["components"][:, self.component_names.index(name)])
        return out

    def evaluate(self, batch: Transitions) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(reward [batch], terms {name: [batch]}) of a batch; rejected outputs raise `RewardCodeError`."""
        arrays = self.arrays(batch)
        size = len(arrays["obs"])
        reward, terms = validate_outputs(self.worker.call(arrays, self.inputs), size, self.reject_constant)
        device = batch["obs"].device
        return _tensor(reward, device), {name: _tensor(value, device) for name, value in terms.items()}

    def __call__(self, batch: Transitions) -> torch.Tensor:
        reward, self.last_terms = self.evaluate(batch)
        return reward

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "origin": self.origin, "inputs": self.inputs,
                "code_sha256": hashlib.sha256(self.checked.source.encode()).hexdigest()}

    def close(self) -> None:
        """Stop the worker process."""
        self.worker.close()

    def __enter__(self) -> SandboxedReward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _named_inputs(checked: CheckedCode, available: Sequence[str]) -> list[str]:
    """The named inputs to pass: all available ones for `**named`, else the declared ones that are available; a
    required parameter that is not available is an error."""
    missing = [name for name in checked.required if name not in available]
    if missing:
        raise RewardCodeError(f"compute_dense_reward requires {', '.join(repr(m) for m in missing)}, which this env "
                              f"does not provide (available: {', '.join(available)})")
    return [name for name in available if checked.takes_any or name in checked.keywords]


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.array(array, dtype=np.float32), device=device)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().cpu().numpy()
    return array if array.dtype.str in DTYPES else array.astype(np.float32)

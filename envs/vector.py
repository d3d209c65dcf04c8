"""`VecEnv`: n copies of one env with same-step autoreset and a fixed info contract the trainer relies on.

``step(actions) -> (obs, rewards, terminated, truncated, info)``, all arrays with leading axis n. Where env i ended
this step (terminated or truncated), ``obs[i]`` is already the first observation of its next episode. ``info`` always
holds exactly:

- ``"next_obs"``: [n, *obs_shape], the true next observation of this transition (the final one for ended envs);
- ``"reward_components"``: float64 [n, k], raw components of this transition in `reward_spec` order;
- ``"success"``: bool [n], False where the task defines no success;
- ``"episode_return"``: float64 [n], the ended episode's total reward where terminated | truncated, else nan;
- ``"episode_length"``: int64 [n], the ended episode's length where terminated | truncated, else 0.
- ``"state"`` (only for envs made with ``record_state=True``): float64 [n, d], the simulator state after this
  transition (the final state for ended envs; see `envs.state`).

Actions are passed to the envs as given: clipping to the action space is the agent's job, not the VecEnv's.
"async" runs each env in its own worker process with exactly the same contract (and, for equal seeds and actions,
the same numbers) as "sync".
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import signal
import traceback
from collections.abc import Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.components import RewardSpec
from envs.registry import EnvSpec, get_env_spec, make
from envs.wrappers import RewardComponentsWrapper

Vectorization = Literal["sync", "async"]
# What one env returns per step: next_obs, obs after autoreset (None if it continues), reward, terminated,
# truncated, component values, success, episode return (nan) and length (0) where the episode continues, and the
# simulator state after the step (None unless the env records states).
StepResult = tuple[Any, Any, float, bool, bool, Sequence[float], bool, float, int, Any]


class EpisodeRunner:
    """One env plus same-step autoreset and episode bookkeeping (shared by the sync path and async workers)."""

    def __init__(self, env: RewardComponentsWrapper) -> None:
        """Wrap a made env."""
        self.env = env
        self._return = 0.0
        self._length = 0

    def reset(self, seed: int | None = None) -> Any:
        """Reset the env and the episode counters; returns the first observation."""
        self._return, self._length = 0.0, 0
        return self.env.reset(seed=seed)[0]

    def step(self, action: Any) -> StepResult:
        """Step; if the episode ended, reset at once and report the ended episode's return and length."""
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += reward
        self._length += 1
        components = list(info["reward_components"].values())
        success = bool(info.get("success", False))
        state = info.get("state")
        if not (terminated or truncated):
            return next_obs, None, reward, terminated, truncated, components, success, float("nan"), 0, state
        episode_return, episode_length = self._return, self._length
        first_obs = self.reset()
        return (next_obs, first_obs, reward, terminated, truncated, components, success, episode_return,
                episode_length, state)


def _worker(conn: Any, spec: EnvSpec, make_kwargs: dict[str, Any]) -> None:
    """Worker process loop: build the env, then serve (command, payload) requests until "close"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which closes the workers
    try:
        runner = EpisodeRunner(make(spec, **make_kwargs))
        env = runner.env
        conn.send(("ok", (env.observation_space, env.action_space, env.reward_spec, env.render_mode)))
    except Exception as error:
        _send_error(conn, error)
        return
    while True:
        try:
            command, payload = conn.recv()
        except (EOFError, OSError):  # the parent went away
            break
        try:
            if command == "step":
                result: Any = runner.step(payload)
            elif command == "reset":
                result = runner.reset(payload)
            elif command == "render":
                result = runner.env.render()
            elif command == "close":
                runner.env.close()
                conn.send(("ok", None))
                break
            else:
                raise ValueError(f"unknown command {command!r}")
            conn.send(("ok", result))
        except Exception as error:
            _send_error(conn, error)
    conn.close()


def _send_error(conn: Any, error: Exception) -> None:
    """Report an exception to the parent: the exception itself when it pickles, and always its traceback."""
    text = traceback.format_exc()
    try:
        conn.send(("error", (error, text)))
    except Exception:
        conn.send(("error", (None, text)))


class VecEnv(VectorEnv):
    """n envs of one id with same-step autoreset; see the module docstring for the exact step/info contract."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": ["rgb_array"]}

    def __init__(
        self,
        spec: EnvSpec,
        num_envs: int,
        *,
        seed: int | None = None,
        vectorization: Vectorization = "sync",
        timeout: float = 120.0,
        context: str = "forkserver",
        **make_kwargs: Any,
    ) -> None:
        """Build `num_envs` copies of `spec` (env i seeded with seed + i, plus the spec's `vector_kwargs(i)`),
        in-process or in worker processes."""
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1; got {num_envs}")
        if vectorization not in ("sync", "async"):
            raise ValueError(f"vectorization must be 'sync' or 'async'; got {vectorization!r}")
        self.num_envs = num_envs
        self.vectorization = vectorization
        self.timeout = timeout
        self._runners: list[EpisodeRunner] = []
        self._conns: list[Any] = []
        self._processes: list[Any] = []
        per_env = [{**(spec.vector_kwargs(i) if spec.vector_kwargs else {}), **make_kwargs,
                    "seed": None if seed is None else seed + i} for i in range(num_envs)]
        if vectorization == "sync":
            self._runners = [EpisodeRunner(make(spec, **kwargs)) for kwargs in per_env]
            env = self._runners[0].env
            description = (env.observation_space, env.action_space, env.reward_spec, env.render_mode)
        else:
            description = self._start_workers(spec, per_env, context)
        obs_space, act_space, self.reward_spec, self.render_mode = description
        self.single_observation_space: gym.Space = obs_space
        self.single_action_space: gym.Space = act_space
        self.observation_space = batch_space(obs_space, num_envs)
        self.action_space = batch_space(act_space, num_envs)
        if seed is not None:
            self.action_space.seed(seed)
        self._obs_dtype = obs_space.dtype
        self.closed = False

    def _start_workers(
        self, spec: EnvSpec, per_env: list[dict[str, Any]], context: str
    ) -> tuple[gym.Space, gym.Space, RewardSpec, str | None]:
        """Start one worker process per env (env i made with `per_env[i]`); return env 0's spaces, reward spec and
        render mode."""
        ctx = mp.get_context(context)
        for kwargs in per_env:
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_worker, args=(child, spec, kwargs), daemon=True)
            try:
                process.start()
            except (pickle.PicklingError, AttributeError, TypeError) as error:
                self._terminate()
                raise TypeError(
                    f"vectorization='async' sends {spec.env_id}'s EnvSpec to worker processes, so its constructor and "
                    f"reward terms must be picklable (module-level functions or classes, no lambdas): {error}"
                ) from error
            child.close()
            self._conns.append(parent)
            self._processes.append(process)
        descriptions = [self._receive(i, "start") for i in range(self.num_envs)]
        return descriptions[0]

    def _receive(self, index: int, command: str) -> Any:
        """Wait (at most `timeout` s) for worker `index`'s answer.

        A worker exception is re-raised here with the worker's traceback attached as a note; a dead worker raises
        RuntimeError and a silent one TimeoutError. Any of these closes the VecEnv.
        """
        conn = self._conns[index]
        try:
            if not conn.poll(self.timeout):
                self._terminate()
                raise TimeoutError(f"VecEnv worker {index} did not answer {command!r} within {self.timeout} s")
            status, payload = conn.recv()
        except (EOFError, OSError) as error:
            self._terminate()
            hint = ""
            if command == "start":
                hint = "; a script that makes an async VecEnv must guard its code with `if __name__ == '__main__':`"
            message = f"VecEnv worker {index} died during {command!r} (see its output above){hint}"
            raise RuntimeError(message) from error
        if status == "error":
            self._terminate()
            error, text = payload
            if error is None:
                raise RuntimeError(f"VecEnv worker {index} failed on {command!r}:\n{text}")
            if hasattr(error, "add_note"):
                error.add_note(f"(raised in VecEnv worker {index} during {command!r}; worker traceback:)\n{text}")
            raise error
        return payload

    def _broadcast(self, command: str, payloads: Sequence[Any]) -> list[Any]:
        """Send one request to every worker, then collect the answers in order."""
        for conn, payload in zip(self._conns, payloads, strict=True):
            conn.send((command, payload))
        return [self._receive(i, command) for i in range(self.num_envs)]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Reset every env (env i with seed + i when a seed is given); returns (obs [n, ...], {})."""
        if options is not None:
            raise ValueError("VecEnv.reset does not take options")
        seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        if self._runners:
            observations = [runner.reset(s) for runner, s in zip(self._runners, seeds, strict=True)]
        else:
            observations = self._broadcast("reset", seeds)
        if seed is not None:
            self.action_space.seed(seed)
        return np.asarray(observations, dtype=self._obs_dtype), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Step every env with its row of `actions` (not clipped); see the module docstring for the contract."""
        if self._runners:
            results = [runner.step(action) for runner, action in zip(self._runners, actions, strict=True)]
        else:
            results = self._broadcast("step", list(actions))
        columns = zip(*results, strict=True)
        next_obs, reset_obs, rewards, terminated, truncated, components, success, returns, lengths, states = columns
        next_obs_array = np.asarray(next_obs, dtype=self._obs_dtype)
        obs_array = next_obs_array.copy()
        for i, first_obs in enumerate(reset_obs):
            if first_obs is not None:
                obs_array[i] = first_obs
        info = {
            "next_obs": next_obs_array,
            "reward_components": np.asarray(components, dtype=np.float64).reshape(self.num_envs, -1),
            "success": np.asarray(success, dtype=bool),
            "episode_return": np.asarray(returns, dtype=np.float64),
            "episode_length": np.asarray(lengths, dtype=np.int64),
        }
        if states[0] is not None:
            info["state"] = np.stack(states).astype(np.float64, copy=False)
        return (
            obs_array,
            np.asarray(rewards, dtype=np.float64),
            np.asarray(terminated, dtype=bool),
            np.asarray(truncated, dtype=bool),
            info,
        )

    def render(self) -> np.ndarray:
        """A frame of env 0 (HxWx3 uint8)."""
        if self._runners:
            return self._runners[0].env.render()
        self._conns[0].send(("render", None))
        return self._receive(0, "render")

    def close_extras(self, **kwargs: Any) -> None:
        """Close the envs (and stop the workers)."""
        for runner in self._runners:
            runner.env.close()
        for i, conn in enumerate(self._conns):
            try:
                conn.send(("close", None))
                if conn.poll(min(self.timeout, 10.0)):
                    conn.recv()
            except (EOFError, OSError):
                pass
            self._processes[i].join(timeout=5.0)
        self._terminate()

    def _terminate(self) -> None:
        """Stop any worker still alive and drop the pipes."""
        for process in self._processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5.0)
        for conn in self._conns:
            conn.close()
        self._conns, self._processes = [], []
        self.closed = True

    def __del__(self) -> None:
        """Best-effort cleanup of workers if the user forgot close()."""
        if not getattr(self, "closed", True):
            try:
                self.close()
            except Exception:
                pass


def make_vec(
    env_id: str,
    num_envs: int,
    *,
    seed: int | None = None,
    vectorization: Vectorization = "sync",
    timeout: float = 120.0,
    **make_kwargs: Any,
) -> VecEnv:
    """`num_envs` copies of `envs.make(env_id, **make_kwargs)` behind the `VecEnv` contract; env i seeded seed + i.
    Multi-task ids (e.g. "metaworld/MT10") give env i task i modulo the number of tasks.

    "sync" steps the envs in this process (fastest for cheap envs); "async" gives each env a worker process
    (forkserver), answering within `timeout` seconds or raising.
    """
    return VecEnv(
        get_env_spec(env_id), num_envs, seed=seed, vectorization=vectorization, timeout=timeout, **make_kwargs
    )

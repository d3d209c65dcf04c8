"""`VecEnv`: n copies of one env with same-step autoreset and a fixed info contract the trainer relies on.

``step(actions) -> (obs, rewards, terminated, truncated, info)``, all arrays with leading axis n. Where env i ended
this step (terminated or truncated), ``obs[i]`` is already the first observation of its next episode. ``info`` always
holds exactly:

- ``"next_obs"``: [n, *obs_shape], the true next observation of this transition (the final one for ended envs);
  this is robotrl's name for what gymnasium's own vector envs put in ``info["final_obs"]`` (there only for ended
  envs, with a ``"_final_obs"`` mask); here it is there for every env, equal to ``obs[i]`` where env i goes on;
- ``"reward_components"``: float64 [n, k], raw components of this transition in `reward_spec` order;
- ``"success"``: bool [n], False where the task defines no success;
- ``"episode_return"``: float64 [n], the ended episode's total reward where terminated | truncated, else nan;
- ``"episode_length"``: int64 [n], the ended episode's length where terminated | truncated, else 0.
- ``"state"`` (only for envs made with ``record_state=True``): float64 [n, d], the simulator state after this
  transition (the final state for ended envs; see `envs.state`).

Observations of a Dict space come batched key by key (a dict of [n, ...] arrays, ``info["next_obs"]`` too), as
gymnasium batches them. There is no ``"final_info"``: the ended episode's return, length and success are the entries
above.

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
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

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
    """n envs of one id with same-step autoreset; see the module docstring for the exact step/info contract.

    The autoreset mode is gymnasium's SAME_STEP: where env i ended, ``obs[i]`` already starts its next episode.
    The final observation of the ended episode is ``info["next_obs"][i]`` (gymnasium's ``info["final_obs"]``).
    """

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
        if num_envs > 1 and spec.single_env_reason:
            raise ValueError(f"{spec.env_id}: a vector env can hold only one env of this id, got num_envs={num_envs}. "
                             f"{spec.single_env_reason}")
        self.num_envs = num_envs
        self.vectorization = vectorization
        self.timeout = timeout
        self._runners: list[EpisodeRunner] = []
        self._conns: list[Any] = []
        self._processes: list[Any] = []
        per_env = [{**(spec.vector_kwargs(i) if spec.vector_kwargs else {}), **make_kwargs,
                    "seed": None if seed is None else seed + i} for i in range(num_envs)]
        try:
            if vectorization == "sync":
                for kwargs in per_env:  # one by one, so that a failure closes the envs already built
                    self._runners.append(EpisodeRunner(make(spec, **kwargs)))
                env = self._runners[0].env
                description = (env.observation_space, env.action_space, env.reward_spec, env.render_mode)
            else:
                description = self._start_workers(spec, per_env, context)
        except BaseException:
            self.close_extras()
            raise
        obs_space, act_space, self.reward_spec, self.render_mode = description
        self.single_observation_space: gym.Space = obs_space
        self.single_action_space: gym.Space = act_space
        self.observation_space = batch_space(obs_space, num_envs)
        self.action_space = batch_space(act_space, num_envs)
        if seed is not None:
            self.action_space.seed(seed)
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
        RuntimeError and a silent one TimeoutError. Any of these closes the VecEnv (the envs of the workers that still
        answer are closed, a silent worker is terminated).
        """
        conn = self._conns[index]
        try:
            if not conn.poll(self.timeout):
                self._terminate()
                raise TimeoutError(f"VecEnv worker {index} did not answer {command!r} within {self.timeout} s")
            status, payload = conn.recv()
        except (EOFError, OSError) as error:
            self.close_extras()
            hint = ""
            if command == "start":
                hint = "; a script that makes an async VecEnv must guard its code with `if __name__ == '__main__':`"
            message = f"VecEnv worker {index} died during {command!r} (see its output above){hint}"
            raise RuntimeError(message) from error
        if status == "error":
            self.close_extras()
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

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict]:
        """Reset every env: with an int seed env i gets seed + i, with a list of n seeds env i gets seeds[i] (None:
        unseeded); returns (obs [n, ...], {}). The action space is seeded with the int seed (or seeds[0])."""
        if options is not None:
            raise ValueError("VecEnv.reset does not take options")
        seeds = self._env_seeds(seed)
        if self.vectorization == "sync":
            observations = [runner.reset(s) for runner, s in zip(self._runners, seeds, strict=True)]
        else:
            observations = self._broadcast("reset", seeds)
        if seeds[0] is not None:
            self.action_space.seed(seeds[0])
        return self._stack(observations), {}

    def _env_seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        """One seed per env from `reset`'s seed argument (see `reset`)."""
        if seed is None or isinstance(seed, (int, np.integer)):
            return [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        if isinstance(seed, (str, bytes)) or not isinstance(seed, Sequence | np.ndarray):
            raise TypeError(f"seed must be an int, a list of {self.num_envs} ints or None; got {seed!r}")
        if len(seed) != self.num_envs:
            raise ValueError(f"seed must have one entry per env ({self.num_envs}); got {len(seed)}: {list(seed)}")
        return [None if s is None else int(s) for s in seed]

    def _stack(self, observations: Sequence[Any]) -> Any:
        """Batch one observation per env along a new first axis (a Dict space key by key). Box observations take
        numpy's stacking directly: gymnasium's generic path costs ~3 us more per call, twice per step."""
        space = self.single_observation_space
        if isinstance(space, gym.spaces.Box):
            return np.asarray(observations, dtype=space.dtype)
        return concatenate(space, observations, create_empty_array(space, self.num_envs))

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env with its row of `actions` (not clipped); see the module docstring for the contract."""
        if self.vectorization == "sync":
            results = [runner.step(action) for runner, action in zip(self._runners, actions, strict=True)]
        else:
            results = self._broadcast("step", list(actions))
        columns = zip(*results, strict=True)
        next_obs, reset_obs, rewards, terminated, truncated, components, success, returns, lengths, states = columns
        obs = self._stack([final if first is None else first for final, first in zip(next_obs, reset_obs, strict=True)])
        info = {
            "next_obs": self._stack(next_obs),
            "reward_components": np.asarray(components, dtype=np.float64).reshape(self.num_envs, -1),
            "success": np.asarray(success, dtype=bool),
            "episode_return": np.asarray(returns, dtype=np.float64),
            "episode_length": np.asarray(lengths, dtype=np.int64),
        }
        if states[0] is not None:
            info["state"] = np.stack(states).astype(np.float64, copy=False)
        return (
            obs,
            np.asarray(rewards, dtype=np.float64),
            np.asarray(terminated, dtype=bool),
            np.asarray(truncated, dtype=bool),
            info,
        )

    def render(self) -> np.ndarray:
        """A frame of env 0 (HxWx3 uint8)."""
        if self.vectorization == "sync":
            return self._runners[0].env.render()
        self._conns[0].send(("render", None))
        return self._receive(0, "render")

    def close_extras(self, **kwargs: Any) -> None:
        """Close the envs (and stop the workers); safe to call more than once."""
        runners, self._runners = self._runners, []
        for runner in runners:
            runner.env.close()
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (EOFError, OSError):  # this worker is gone
                pass
        for conn, process in zip(self._conns, self._processes, strict=True):
            try:  # skip answers still pending (e.g. a start), until the worker closes its end after "close"
                while conn.poll(min(self.timeout, 10.0)):
                    conn.recv()
            except (EOFError, OSError):
                pass
            process.join(timeout=5.0)
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

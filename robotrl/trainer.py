"""The training loop: owns envs, the reward source, buffers, logging, evaluation and checkpoints.

Agents only act and update. Rewards always come from a `RewardSource` (the env reward by default), so learned or
generated rewards plug in without touching agents, and off-policy buffers can be relabelled when the source changes.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
from envs.components import RewardSpec
from reward_learning import ComponentReward, EnvReward, RewardSource, Transitions
from reward_learning.sandbox import RewardCodeError, SandboxedReward, SandboxLimits
from robotrl.agents import AGENTS, Agent
from robotrl.config import ConfigError, RunConfig, dump_config, load_config
from robotrl.core import checkpoint as ckpt
from robotrl.core.buffers import ReplayBatch, ReplayBuffer, RolloutBuffer
from robotrl.core.device import resolve_device, set_torch_threads
from robotrl.evaluation import EvalResult, evaluate, make_eval_env
from robotrl.logger import METRICS_FILE, MetricsLogger, to_float
from robotrl.pending_rewards import CodeRewarder, PendingRewards, PlaceholderReward, RolloutRewards
from robotrl.preference import PreferenceLoop
from robotrl.progress import TrainingProgress
from robotrl.spaces import ActionAdapter
from robotrl.vlm_rewards import VLMRewarder, vlm_teacher

CHECKPOINT = "checkpoint.pt"
REWARD_CODE = "reward_code.py"


class TrainingDiverged(RuntimeError):
    """A loss, parameter or reward became NaN/inf; the last good checkpoint is kept."""


class _Stop(KeyboardInterrupt):
    """Raised from the stop-signal handlers so the loop can checkpoint and exit cleanly; `signum` names the signal."""

    def __init__(self, signum: int, again: bool = False) -> None:
        super().__init__(f"received signal {signum}" + (" again" if again else ""))
        self.signum = signum


class _ForcedStop(_Stop):
    """A second stop signal during a feedback round: exit without checkpointing the half-done round."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_eval: dict[str, float]


def new_run_dir(config: RunConfig) -> Path:
    """`<runs_dir>/<name>-<YYYYmmdd-HHMMSS>` (suffixed if it already exists)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(config.runs_dir) / f"{config.name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def build_agent(config: RunConfig, obs_dim: int, adapter: ActionAdapter, device: torch.device,
                reward_spec: RewardSpec = ()) -> Agent:
    """Instantiate the configured agent for these spaces, with a clear error for impossible pairings.

    Agents that learn from the separate reward components (`uses_reward_spec`) also get the env's reward spec."""
    cls = AGENTS[config.algo.name]
    kind = "discrete" if adapter.discrete else "continuous"
    if kind not in cls.action_spaces:
        fits = [name for name, other in AGENTS.items() if kind in other.action_spaces]
        raise ValueError(f"{config.algo.name} needs {' or '.join(cls.action_spaces)} actions but {config.env.id} has "
                         f"{kind} actions; use algo.name={' | '.join(fits)}")
    if cls.on_policy:
        return cls(obs_dim, adapter.action_dim, config.algo, device, num_envs=config.env.num_envs,
                   discrete=adapter.discrete)
    if cls.uses_reward_spec:
        return cls(obs_dim, adapter.action_dim, config.algo, device, reward_spec=reward_spec)
    return cls(obs_dim, adapter.action_dim, config.algo, device)


def build_reward_source(config: RunConfig, component_names: list[str], run_dir: Path | None = None
                        ) -> RewardSource:
    """The fixed reward source the config asks for (learned rewards come from `PreferenceLoop`)."""
    if config.reward.source == "components":
        return ComponentReward(component_names, config.reward.weights)
    if config.reward.source == "code":
        return sandboxed_reward(config, component_names, run_dir)
    if config.reward.source == "vlm":  # the real rewards are written into the buffer by `VLMRewarder`
        return PlaceholderReward("vlm")
    return EnvReward()


def build_rewarder(config: RunConfig, source: RewardSource) -> PendingRewards | None:
    """The batched scorer of a reward source too costly to call once per env step (a VLM, sandboxed reward code), or
    None for sources that are called per step."""
    if config.reward.source == "vlm":
        return VLMRewarder.from_config(config)
    if config.reward.source == "code" and isinstance(source, SandboxedReward):
        return CodeRewarder.from_config(config, source)
    return None


def sandboxed_reward(config: RunConfig, component_names: list[str], run_dir: Path | None) -> SandboxedReward:
    """`reward.source: code`: the reward file run in the sandbox. A run keeps its own copy (`reward_code.py`) and
    `Trainer.resume` trains on that copy, so editing or regenerating the original does not change a resumed run; a
    new run always copies the file its config names."""
    code = config.reward.code
    path = Path(code.path or "")  # the config requires a path for this source
    if not path.is_file():
        raise ConfigError(f"reward.code.path: no reward-code file at {path}")
    copy = run_dir / REWARD_CODE if run_dir is not None else None
    if copy is not None and not (copy.exists() and copy.samefile(path)):
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        path = copy
    limits = SandboxLimits(cpu_seconds=code.cpu_seconds, wall_seconds=2 * code.cpu_seconds, memory_mb=code.memory_mb)
    try:
        return SandboxedReward.from_file(path, component_names, limits=limits)
    except RewardCodeError as err:
        raise ConfigError(f"reward.code.path: {path} was rejected: {err}") from None


def episode_limit(config: RunConfig) -> int:
    """The env's time limit (what B-Pref's teacher thresholds and segment checks are relative to)."""
    if config.env.max_episode_steps:
        return config.env.max_episode_steps
    probe = envs.make(config.env.id, **config.env.kwargs)
    try:
        limit = probe.max_episode_steps
    finally:
        probe.close()
    if not limit:
        raise ConfigError(f"{config.env.id} has no time limit; set env.max_episode_steps for preference learning")
    return int(limit)


class Trainer:
    """Train one run from a config; `Trainer.resume(run_dir)` continues a killed run from its last checkpoint."""

    def __init__(self, config: RunConfig, run_dir: Path | None = None, reward_source: RewardSource | None = None,
                 progress: bool = True, resuming: bool = False) -> None:
        """`resuming`: `run_dir` holds an earlier attempt of this run (what `resume` passes); a new run refuses a
        run dir that already holds metrics or a checkpoint."""
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config)
        if not resuming:
            refuse_used_run_dir(self.run_dir)
        self.show_progress = progress
        set_torch_threads(config.train.torch_threads)
        self.device = resolve_device(config.device)
        ckpt.seed_everything(config.seed)
        pref = config.reward.preference
        self.state_dim = 0
        record_state = config.reward.source == "preference" and (pref.record_states or pref.teacher in ("human", "vlm"))
        record_state = record_state or config.reward.source == "vlm"  # VLM frames are rendered from stored states
        try:
            if record_state:
                self.state_dim = simulator_state_size(config)
            self.vec = envs.make_vec(config.env.id, config.env.num_envs, seed=config.seed,
                                     vectorization=config.env.vectorization, record_state=record_state,
                                     max_episode_steps=config.env.max_episode_steps, **config.env.kwargs)
        except TypeError as err:  # a constructor kwarg the env does not take
            raise ConfigError(f"env.kwargs: {err}") from None
        try:
            self._build(config, reward_source)
        except BaseException:
            self.vec.close()
            raise

    def _build(self, config: RunConfig, reward_source: RewardSource | None) -> None:
        """Everything after the envs exist (split out so a failure here still closes them)."""
        self.component_names = [c.name for c in self.vec.reward_spec]
        obs_space = self.vec.single_observation_space
        if len(obs_space.shape) != 1:
            raise ValueError(f"{config.env.id}: only flat vector observations are supported so far, got {obs_space}")
        self.obs_dim = int(obs_space.shape[0])
        self.adapter = ActionAdapter.from_space(self.vec.single_action_space)
        self.agent = build_agent(config, self.obs_dim, self.adapter, self.device, self.vec.reward_spec)
        self.preference: PreferenceLoop | None = None
        if config.reward.source == "preference":
            self.preference = PreferenceLoop(
                config.reward.preference, env_id=config.env.id, obs_shape=(self.obs_dim,),
                action_dim=self.adapter.action_dim if self.adapter.discrete else self.adapter.stored_dim,
                discrete_actions=self.adapter.discrete, component_names=self.component_names, run_dir=self.run_dir,
                run_name=self.run_dir.name, learning_starts=0 if self.agent.on_policy else config.algo.learning_starts,
                total_steps=config.train.total_steps, max_episode_steps=episode_limit(config),
                gamma=config.algo.gamma, device=self.device, seed=config.seed,
                component_directions=[c.direction for c in self.vec.reward_spec],
                teacher=vlm_teacher(config) if config.reward.preference.teacher == "vlm" else None)
        source = reward_source or (self.preference.reward_source if self.preference
                                   else build_reward_source(config, self.component_names, self.run_dir))
        self.rewarder = build_rewarder(config, source)  # then the buffer holds placeholders until rows are scored
        self.reward_source = source if self.rewarder is None else PlaceholderReward(source.name)
        self.buffer: ReplayBuffer | None = None
        if not self.agent.on_policy or self.preference is not None:  # PrefPPO keeps recent steps for segments
            capacity = config.reward.preference.segment_pool if self.agent.on_policy else config.algo.buffer_size
            self.buffer = ReplayBuffer(capacity, (self.obs_dim,), self.adapter.stored_dim,
                                       len(self.component_names), self.device, state_dim=self.state_dim)
        self.episode_ids = np.arange(config.env.num_envs, dtype=np.int64)
        self.rng = np.random.default_rng(config.seed)
        self.step = 0
        self.episodes = 0
        self.last_eval: dict[str, float] = {}
        self.last_eval_step = -1
        self.checkpoint_step = -1  # the step the newest checkpoint holds
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.start_step = 0

    # ----------------------------------------------------------------------------------------------------- resume
    @classmethod
    def resume(cls, run_dir: str | Path, progress: bool = True, overrides: tuple[str, ...] = ()) -> Trainer:
        """Rebuild a run from its saved config and continue from `checkpoint.pt` (buffer, counters, RNG intact)."""
        run_dir = Path(run_dir)
        if (run_dir / REWARD_CODE).exists():  # continue on the run's own copy of its reward code
            overrides = (f"reward.code.path={run_dir / REWARD_CODE}", *overrides)
        config = load_config(run_dir / "config.yaml", overrides)
        trainer = cls(config, run_dir, progress=progress, resuming=True)
        path = run_dir / CHECKPOINT
        if path.exists():
            try:
                trainer.load_checkpoint(path)
            except BaseException:
                trainer.vec.close()
                if trainer.preference is not None:
                    trainer.preference.close()
                raise
        return trainer

    # ------------------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        """Atomically write params, optimisers, RNG states, normaliser stats, counters and the replay buffer."""
        if self.rewarder is not None and self.buffer is not None:  # never save placeholder rewards
            self.rewarder.flush(self.buffer)
        agent_state = self.agent.full_state()
        if not ckpt.tensors_finite(agent_state["modules"]):
            raise TrainingDiverged(self._diverged_message("network parameters contain NaN/inf"))
        state: dict[str, Any] = {
            "step": self.step, "episodes": self.episodes, "agent": agent_state, "rng": ckpt.rng_state(),
            "np_rng": self.rng.bit_generator.state, "last_eval": self.last_eval, "last_eval_step": self.last_eval_step,
            "recent_returns": list(self.recent_returns), "config": self.config.model_dump(mode="json"),
            "episode_ids": self.episode_ids,
        }
        if self.buffer is not None and self.config.train.save_buffer:
            state["buffer"] = self.buffer.state_dict()
        if self.preference is not None:
            state["preference"] = self.preference.state_dict()
            self.preference.save_model()
        ckpt.atomic_save(state, self.run_dir / CHECKPOINT)
        self.checkpoint_step = self.step

    def load_checkpoint(self, path: Path) -> None:
        """Restore everything `save_checkpoint` wrote; a checkpoint this code cannot read fails with what to do."""
        state = ckpt.load(path)  # on the CPU: RNG states must stay there; modules and buffers copy to the device
        try:
            self._restore(state)
        except (KeyError, RuntimeError, ValueError) as err:
            raise ckpt.CheckpointError(
                f"{path} does not fit this run ({type(err).__name__}: {str(err).splitlines()[0]}). It was probably "
                "written by another robotrl version or for another config: resume it with the version that wrote "
                "it, or start a new run") from err

    def _restore(self, state: dict[str, Any]) -> None:
        self.agent.load_full_state(state["agent"])
        if self.buffer is not None and "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
        ckpt.set_rng_state(state["rng"])
        self.rng.bit_generator.state = state["np_rng"]
        self.step, self.episodes = state["step"], state["episodes"]
        self.checkpoint_step = self.step
        self.last_eval = state["last_eval"]
        # checkpoints older than this field: assume the evaluations due so far were logged
        self.last_eval_step = state.get("last_eval_step", self.step)
        self.recent_returns.extend(state["recent_returns"])
        self.episode_ids = state["episode_ids"]
        self.start_step = self.step
        if self.preference is not None:
            self.preference.load_state_dict(state["preference"])
            self.preference.resync_from_store()

    def _diverged_message(self, cause: str) -> str:
        saved = self.run_dir / CHECKPOINT
        keep = f"the last good checkpoint is kept at {saved}" if saved.exists() else "no checkpoint was written yet"
        return (f"training stopped at step {self.step}: {cause}; {keep}. Lower the learning rates, check the reward "
                "source, or resume with different settings.")

    # ------------------------------------------------------------------------------------------------------ main
    def train(self) -> TrainResult:
        """Run until `train.total_steps`, evaluating, logging and checkpointing on the way."""
        cfg = self.config
        with contextlib.ExitStack() as cleanup:  # closes whatever was opened, whatever fails
            cleanup.callback(self.vec.close)
            if self.preference is not None:
                cleanup.callback(self.preference.close)
            if self.rewarder is not None:  # e.g. the sandbox's worker process
                cleanup.callback(self.rewarder.close)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_config(cfg))
            resume_step = self.checkpoint_step if self.checkpoint_step >= 0 else None  # None: start from scratch
            self.logger = MetricsLogger(self.run_dir, cfg.logging.tensorboard, cfg.logging.wandb,
                                        cfg.model_dump(mode="json"), resume_step=resume_step)
            cleanup.callback(self.logger.close)
            self.eval_envs = []
            for kwargs in eval_env_kwargs(cfg):
                self.eval_envs.append(make_eval_env(cfg.env.id, kwargs, False, 0, 0, None, cfg.env.max_episode_steps))
                cleanup.callback(self.eval_envs[-1].close)
            cleanup.callback(signal.signal, signal.SIGTERM, signal.getsignal(signal.SIGTERM))
            signal.signal(signal.SIGTERM, _raise_stop)
            self.progress = TrainingProgress(cfg.train.total_steps, self.step, enabled=self.show_progress,
                                             description=cfg.name)
            try:
                if self._evaluation_lost():  # the run was stopped while it evaluated
                    self._evaluate()
                    self.save_checkpoint()
                with self.progress:
                    if self.agent.on_policy:
                        self._train_on_policy()
                    else:
                        self._train_off_policy()
                saved = self.checkpoint_step == self.step and self.last_eval_step == self.step
                final = self.last_eval if self.last_eval_step == self.step else self._evaluate()
                if not saved:  # unless a periodic save just wrote this very state
                    self.save_checkpoint()
            except _ForcedStop:
                raise  # the last checkpoint holds a consistent state, this one does not
            except KeyboardInterrupt:
                self.save_checkpoint()
                raise
        return TrainResult(self.run_dir, self.step, final)

    def _evaluation_lost(self) -> bool:
        """Whether the evaluation due by this (resumed) step was never logged: a stop interrupted it."""
        every = self.config.train.eval_every
        return bool(every) and self.step // every > max(self.last_eval_step, 0) // every

    def _reset_envs(self) -> np.ndarray:
        # a resumed run starts fresh episodes, seeded by the step so that resumes are reproducible too
        obs, _ = self.vec.reset(seed=self.config.seed + self.step)
        self.episode_step = np.zeros(self.config.env.num_envs, dtype=np.int64)
        # fresh episodes get fresh ids, above any the label store already holds (a resume after a kill)
        highest = int(self.episode_ids.max())
        if self.preference is not None:
            highest = max(highest, self.preference.store.max_episode(self.preference.run_name))
        self.episode_ids = highest + 1 + np.arange(self.config.env.num_envs, dtype=np.int64)
        return obs

    def _transitions(self, needs: frozenset[str] | None, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray,
                     env_reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, info: dict[str, Any]
                     ) -> Transitions:
        """This vector step as the tensors a reward source reads (`needs`; None = all)."""
        arrays = {"obs": obs, "action": action, "next_obs": next_obs, "env_reward": env_reward,
                  "components": info["reward_components"], "terminated": terminated, "truncated": truncated,
                  "episode_step": self.episode_step}
        return {k: torch.as_tensor(arrays[k], dtype=torch.float32, device=self.device) for k in needs or arrays}

    def _rewards(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, env_reward: np.ndarray,
                 terminated: np.ndarray, truncated: np.ndarray, info: dict[str, Any]) -> torch.Tensor:
        """Ask the reward source for this vector step's rewards; stop on NaN/inf."""
        batch = self._transitions(self.reward_source.needs, obs, action, next_obs, env_reward, terminated, truncated,
                                  info)
        reward = self.reward_source(batch)
        finite = np.isfinite(reward.numpy()).all() if reward.device.type == "cpu" else torch.isfinite(reward).all()
        if not finite:
            raise TrainingDiverged(self._diverged_message(
                f"the reward source '{self.reward_source.name}' returned NaN/inf (env reward {env_reward.tolist()})"))
        return reward

    def _after_env_step(self, terminated: np.ndarray, truncated: np.ndarray, info: dict[str, Any]) -> None:
        """Episode bookkeeping shared by both loops."""
        n = len(terminated)
        self.step += n
        self.episode_step += 1
        done = terminated | truncated
        if done.any():
            for i in np.flatnonzero(done):
                self.episode_ids[i] = self.episode_ids.max() + 1
                self.recent_returns.append(float(info["episode_return"][i]))
                self.episodes += 1
                self.logger.log(self.step, {"train/episode_return": info["episode_return"][i],
                                            "train/episode_length": info["episode_length"][i]})
            self.episode_step[done] = 0

    def _periodic(self, metrics: dict[str, torch.Tensor], crossed: Any) -> None:
        """Logging, evaluation and checkpoints when their intervals are crossed."""
        cfg = self.config.train
        if crossed(cfg.log_every) and metrics:
            values = {f"train/{k}": to_float(v) for k, v in metrics.items()}
            bad = [k for k, v in values.items() if not np.isfinite(v)]
            if bad:
                raise TrainingDiverged(self._diverged_message(f"{', '.join(bad)} became NaN/inf"))
            values["time/fps"] = self.progress.rate()
            if self.rewarder is not None:
                values.update(self.rewarder.metrics())
            self.logger.log(self.step, values)
        if cfg.eval_every and crossed(cfg.eval_every):
            self._evaluate()
        if crossed(cfg.checkpoint_every):
            self.save_checkpoint()
        recent = float(np.mean(self.recent_returns)) if self.recent_returns else None
        self.progress.update(self.step, recent, self.last_eval.get("eval/return"))

    def _evaluate(self) -> dict[str, float]:
        """`eval_episodes` deterministic episodes, spread over the eval envs (one per task of multi-task ids)."""
        cfg = self.config
        episodes, tasks = cfg.train.eval_episodes, len(self.eval_envs)
        results = [evaluate(self.agent, env, self.adapter, len(range(i, episodes, tasks)),
                            cfg.seed + 1_000_000 + i * episodes, self.device) for i, env in enumerate(self.eval_envs)]
        self.last_eval, self.last_eval_step = pooled(results).summary(), self.step
        if tasks > 1:
            self.last_eval.update({f"eval/tasks/{i}/success_rate": float(np.mean(result.successes))
                                   for i, result in enumerate(results) if result.has_success})
        self.logger.log(self.step, self.last_eval)
        pref = self.preference
        if pref is not None and pref.rounds and pref.last_round_step != self.step and self.buffer is not None:
            self.logger.log(self.step, pref.diagnostics(self.buffer, cfg.env.num_envs))
        return self.last_eval

    def _feedback_round(self, relabel: bool) -> None:
        """Ask for labels, retrain the reward, relabel the replay buffer (off-policy) and checkpoint. A stop signal
        waits for the end of the round (`_stops_deferred`), so no checkpoint holds half a round."""
        pref, buffer = self.preference, self.buffer
        assert pref is not None and buffer is not None
        with _stops_deferred():
            # the agent has trained on no learned reward yet (`labels_from` may have trained one before round 1)
            first = pref.rounds == 0 or not pref.has_reward
            self.progress.status(f"reward round {pref.rounds + 1}: labelling and training")
            recent = self.config.reward.preference.segment_pool if self.agent.on_policy else None
            metrics = pref.run_round(self.step, buffer, self.config.env.num_envs, list(self.recent_returns), recent,
                                     status=self.progress.status)
            if relabel and pref.has_reward:
                started = time.perf_counter()
                buffer.relabel(pref.reward_source)
                pref.seconds["relabel"] += time.perf_counter() - started
                metrics["time/relabel_s"] = pref.seconds["relabel"]
                cfg = self.config.reward.preference
                if first and cfg.reset_critic:
                    self.agent.reset_critic()
                    for _ in range(cfg.reset_updates):
                        self.agent.update(self._sample(buffer))
            self.logger.log(self.step, metrics)
            self.progress.status(None)
        self.save_checkpoint()

    def _train_off_policy(self) -> None:
        cfg, algo, buffer, pref = self.config, self.config.algo, self.buffer, self.preference
        assert buffer is not None
        obs = self._reset_envs()
        metrics: dict[str, torch.Tensor] = {}
        n = cfg.env.num_envs
        # a resume without a saved buffer refills it, acting with the restored policy, before updating again
        refill = max(algo.batch_size, algo.learning_starts) if self.step and not len(buffer) else 0
        while self.step < cfg.train.total_steps:
            if self.step < algo.learning_starts:
                action = self.adapter.random(self.rng, n)
            else:
                obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
                action = self.agent.act(obs_t).cpu().numpy()
            next_obs, env_reward, terminated, truncated, info = self.vec.step(self.adapter.to_env(action))
            true_next = info["next_obs"]
            reward = self._rewards(obs, action, true_next, env_reward, terminated, truncated, info)
            self._store_step(obs, action, true_next, reward, env_reward, terminated, truncated, info)
            if self.rewarder is not None:
                self.rewarder.collect(buffer, n)
            before = self.step
            self._after_env_step(terminated, truncated, info)
            obs = next_obs
            if pref is not None and pref.round_due(self.step):
                self._feedback_round(relabel=True)
            ready = self.step >= algo.learning_starts and len(buffer) >= refill
            if ready and self.step // algo.train_every > before // algo.train_every:
                if self.rewarder is not None:  # score pending rows first: never train on placeholder rewards
                    self.rewarder.flush(buffer)
                for _ in range(algo.gradient_steps):
                    batch = self._sample(buffer)
                    if pref is not None and pref.unsupervised(self.step):
                        batch.reward = pref.intrinsic_rewards(batch.next_obs, buffer)
                    metrics = self.agent.update(batch)
            self._periodic(metrics, lambda every, b=before: self.step // every > b // every)

    def _sample(self, buffer: ReplayBuffer) -> ReplayBatch:
        """A training minibatch drawn the way the agent asks (e.g. n-step returns across this run's env stride)."""
        return buffer.sample(self.config.algo.batch_size, stride=self.config.env.num_envs,
                             **self.agent.replay_sampling())

    def _train_on_policy(self) -> None:
        cfg, algo = self.config, self.config.algo
        agent = self.agent
        n = cfg.env.num_envs
        rollout = RolloutBuffer(algo.num_steps, n, (self.obs_dim,), self.adapter.stored_dim, self.device)
        code = self.rewarder if isinstance(self.rewarder, CodeRewarder) else None  # scored once per rollout
        scale = agent.scale_reward if algo.normalize_reward else None  # no per-step tensor round trip if unscaled
        rewards = RolloutRewards(rollout, scale, code)
        obs = self._reset_envs()
        while self.step < cfg.train.total_steps:
            before = self.step
            rollout.reset()
            while not rollout.full:
                obs_n, action, log_prob, value = agent.collect(obs)
                next_obs, env_reward, terminated, truncated, info = self.vec.step(self.adapter.to_env(action))
                true_next = info["next_obs"]
                done = terminated | truncated
                rollout.add(obs_n, action, log_prob, value, None, done)  # its reward is written by `rewards`
                bootstrap = self._time_limit_bootstrap(true_next, terminated, truncated)
                applied = self.adapter.applied(action)  # rewards and segments see the action the env carried out
                if code is not None:
                    rewards.defer(self._transitions(code.reward.needs, obs, applied, true_next, env_reward,
                                                    terminated, truncated, info), done, bootstrap)
                else:
                    reward = self._rewards(obs, applied, true_next, env_reward, terminated, truncated, info)
                    if self.preference is not None:
                        reward = self._pool_step(obs, applied, true_next, reward, env_reward, terminated, truncated,
                                                 info)
                    rewards.add(reward, done, bootstrap)
                self._after_env_step(terminated, truncated, info)
                obs = next_obs
            rewards.flush()
            last_obs = agent.normalize_obs(torch.as_tensor(obs, dtype=torch.float32, device=self.device))
            rollout.compute_gae(agent.value(last_obs), algo.gamma, algo.gae_lambda)
            agent.set_progress(self.step / cfg.train.total_steps)
            metrics = agent.update(rollout)
            if self.preference is not None and self.preference.round_due(self.step):
                self._feedback_round(relabel=False)
            self._periodic(metrics, lambda every, b=before: self.step // every > b // every)

    def _time_limit_bootstrap(self, next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray
                              ) -> np.ndarray | None:
        """PPO bootstraps through time limits (r + gamma * V(final obs)): gamma * V of the envs a time limit cut and 0
        elsewhere, or None when none was cut. Computed at the step, with the observation statistics of that step."""
        if not truncated.any():
            return None
        bootstrap = np.zeros(len(truncated), dtype=np.float32)
        idx = np.flatnonzero(truncated & ~terminated)
        final = torch.as_tensor(next_obs[idx], dtype=torch.float32, device=self.device)
        bootstrap[idx] = self.config.algo.gamma * self.agent.value(self.agent.normalize_obs(final)).cpu().numpy()
        return bootstrap

    def _store_step(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: torch.Tensor,
                    env_reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                    info: dict[str, Any]) -> None:
        """Append one vector step to the replay buffer (or PrefPPO's segment pool) with its episode bookkeeping."""
        assert self.buffer is not None
        extra = {"state": info["state"]} if "state" in info else {}
        self.buffer.add(obs=obs, action=action, next_obs=next_obs, reward=reward, env_reward=env_reward,
                        components=info["reward_components"], terminated=terminated, truncated=truncated,
                        episode_step=self.episode_step, episode_id=self.episode_ids, **extra)

    def _pool_step(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: torch.Tensor,
                   env_reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, info: dict[str, Any]
                   ) -> torch.Tensor:
        """PrefPPO: keep the step for segment sampling; before the first round, train on state entropy."""
        pref, buffer = self.preference, self.buffer
        assert pref is not None and buffer is not None
        self._store_step(obs, action, next_obs, reward, env_reward, terminated, truncated, info)
        if pref.unsupervised(self.step) and len(buffer) > pref.config.entropy_k:
            states = torch.as_tensor(next_obs, dtype=torch.float32, device=self.device)
            return pref.intrinsic_rewards(states, buffer)
        return reward


def simulator_state_size(config: RunConfig) -> int:
    """Length of the env's simulator state vector (see `envs.state`), from one throwaway env."""
    env = envs.make(config.env.id, render_mode=None, **config.env.kwargs)
    try:
        if not envs.supports_state(env):
            raise ConfigError(f"{config.env.id} cannot record simulator states, so its segments cannot be shown to "
                              f"people; use a scripted teacher or set reward.preference.record_states=false")
        env.reset(seed=0)
        return len(envs.get_state(env))
    finally:
        env.close()


def refuse_used_run_dir(run_dir: Path) -> None:
    """A new run never writes into another run's folder, where their metrics and checkpoints would mix."""
    used = [name for name in (METRICS_FILE, CHECKPOINT) if (run_dir / name).exists()]
    if used:
        raise ConfigError(f"{run_dir} already holds a run ({', '.join(used)}): continue it with `robotrl resume "
                          f"{run_dir}`, or start a new run with another --run-dir")


def eval_env_kwargs(config: RunConfig) -> list[dict[str, Any]]:
    """The make kwargs of each evaluation env: one env for most ids; for multi-task ids (e.g. metaworld/MT10, whose
    vector env i runs task i) one per task among the first `eval_episodes` vector envs, so evaluation covers the
    tasks training cycles through when `eval_episodes` is at least the number of tasks."""
    vector_kwargs = envs.get_env_spec(config.env.id).vector_kwargs
    if vector_kwargs is None:
        return [config.env.kwargs]
    variants: list[dict[str, Any]] = []
    for i in range(config.train.eval_episodes):
        kwargs = {**vector_kwargs(i), **config.env.kwargs}  # as `envs.make_vec`: the config's kwargs win
        if kwargs not in variants:
            variants.append(kwargs)
    return variants


def pooled(results: list[EvalResult]) -> EvalResult:
    """The episodes of several evaluations as one."""
    out = EvalResult([], [], [], has_success=any(r.has_success for r in results))
    for result in results:
        out.returns += result.returns
        out.lengths += result.lengths
        out.successes += result.successes
        out.component_totals += result.component_totals
    return out


@contextlib.contextmanager
def _stops_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT (Ctrl-C) until the block is done, then stop (`_Stop`) if one came. A second signal
    stops at once (`_ForcedStop`), e.g. while a round waits for people."""
    received: list[int] = []

    def hold(signum: int, frame: object) -> None:
        if received:
            raise _ForcedStop(signum, again=True)
        received.append(signum)
        print("stopping after this feedback round (signal again to stop now and lose the round)", file=sys.stderr)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise _Stop(received[0])


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


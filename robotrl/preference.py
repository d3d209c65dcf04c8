"""PEBBLE's schedule (and PrefPPO's): when to ask for labels, what to ask, and what to do with the answers.

The trainer owns the loop; this object owns the reward model, its labelled data, the teacher, the label budget and
the label store, and tells the trainer when the reward changed (so the replay buffer is relabelled) and when the
critic must be reset. Phases, in env steps:
    [0, learning_starts)                      random actions (off-policy)
    [learning_starts, + unsup_steps)          agent trains on the kNN state-entropy reward
    then one round every `query_every` steps  sample candidates -> select queries -> teacher labels -> store ->
                                              train the reward ensemble -> relabel the replay buffer
The first round uses uniform sampling (the ensemble is untrained) and, for off-policy agents, resets the critic.

With `teacher: human` a round stores its queries and waits (at most `human_timeout` seconds) for people to answer
them in the web page (`robotrl label RUN`), then trains on every label that has arrived, including late answers to
earlier rounds. Until the first label arrives the agent keeps training on the state-entropy reward.

The learner's labels always follow the store (`LabelStore.labelled_pairs`): each round, and after a resume, labels
that were undone or replaced since they were consumed are dropped and labels that count now are added, one per
labeller and query. Scripted runs only read their own teacher's labels. With SURF the store also keeps the wider
segments the learner trains on (`window` more steps on each side of what the teacher was shown), so a resumed run and
`labels_from` get the same segments as the run that asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reward_learning.comparison_sampled import compare_rewards
from reward_learning.heron import HeronTeacher
from reward_learning.intrinsic import StateEntropyReward
from reward_learning.label_store import LabelledPairs, LabelStore
from reward_learning.models import LearnedReward, RewardEnsemble
from reward_learning.preferences import RewardLearner
from reward_learning.queries import FeedbackSchedule, query_features, select_queries
from reward_learning.segments import Label, Segments
from reward_learning.sources import ComponentReward, EnvReward, RewardSource
from reward_learning.teachers import RECENT_EPISODES, LabelBudget, Teacher, make_teacher
from robotrl.config import ConfigError, PreferenceConfig
from robotrl.core.buffers import ReplayBuffer

LABEL_STORE = "labels.sqlite"
REWARD_MODEL = "reward_model.pt"
SEGMENT_FIELDS = ("obs", "action", "next_obs", "env_reward", "components")
HUMAN = "human"
POLL_SECONDS = 0.5  # how often a waiting round looks for new labels


def segments_from_buffer(buffer: ReplayBuffer, index: torch.Tensor, absorbing: torch.Tensor) -> Segments:
    """Gather [q, L] storage indices (and their absorbing mask) from a replay buffer into `Segments`."""
    s = buffer.storage
    state = s["state"][index].double() if "state" in s else None
    return Segments(**{k: s[k][index] for k in SEGMENT_FIELDS}, episode=s["episode_id"][index[:, 0]],
                    start=s["episode_step"][index[:, 0]], absorbing=absorbing, state=state)


class PreferenceLoop:
    """Reward learning from preferences inside a training run (see the module docstring for the phases)."""

    def __init__(self, config: PreferenceConfig, *, env_id: str, obs_shape: tuple[int, ...], action_dim: int,
                 discrete_actions: bool, component_names: Sequence[str], run_dir: Path, run_name: str,
                 learning_starts: int, total_steps: int, max_episode_steps: int, gamma: float,
                 device: torch.device, seed: int, component_directions: Sequence[str] = (),
                 teacher: Teacher | None = None) -> None:
        """`gamma` is the agent's discount (the logged STARC distance depends on it). `teacher` replaces the one the
        config names (the trainer builds teachers that need more than this section, e.g. `teacher: vlm`)."""
        self.config = c = config
        self.run_dir, self.run_name = run_dir, run_name
        self.learning_starts, self.total_steps = learning_starts, total_steps
        self.max_episode_steps = max_episode_steps
        self.gamma = gamma
        self.human = c.teacher == HUMAN
        if self.human and c.surf.enabled:
            raise ConfigError("reward.preference: SURF's temporal cropping needs longer stored segments than people "
                              "are shown; turn surf off for teacher human")
        if c.segment_length > max_episode_steps:
            raise ConfigError(f"reward.preference.segment_length={c.segment_length} is longer than an episode "
                              f"({max_episode_steps} steps) of {env_id}")
        try:
            self.model = RewardEnsemble(obs_shape, action_dim, c.model, discrete_actions,
                                        component_dim=len(component_names)).to(device)
            self.learner = RewardLearner(self.model, c.surf, seed)
            self.teacher: Teacher | None = teacher
            if teacher is None and c.heron is not None:
                directions = dict(zip(component_names, component_directions, strict=False))
                self.teacher = HeronTeacher.from_config(c.heron, component_names=component_names,
                                                        spec_directions=directions)
            elif teacher is None and not self.human:
                self.teacher = make_teacher(c.teacher, component_names=component_names,
                                            component_weights=c.teacher_weights, threshold_quirk=c.threshold_quirk,
                                            **c.teacher_options)
            self.schedule = FeedbackSchedule(c.queries_per_round, c.schedule)
        except ValueError as err:
            people = f" (or {HUMAN!r} for labels from people)" if "teacher" in str(err) else ""
            raise ConfigError(f"reward.preference: {err}{people}") from None
        self.labeller = None if self.teacher is None else f"teacher:{self.teacher.name}"  # None: people, anyone
        self.window = c.surf.window if c.surf.enabled else 0
        self.oracle = make_teacher("oracle", component_names=component_names, component_weights=c.teacher_weights)
        self.true_reward: RewardSource = (ComponentReward(component_names, c.teacher_weights) if c.teacher_weights
                                          else EnvReward())
        self.budget = LabelBudget(c.budget)
        self.entropy = StateEntropyReward(c.entropy_k)
        self.reward_source = LearnedReward(self.model)
        stored_action_dim = 1 if discrete_actions else action_dim
        self.store_meta = {"env_id": env_id, "obs_shape": obs_shape, "action_dim": stored_action_dim,
                           "component_names": list(component_names)}
        run_dir.mkdir(parents=True, exist_ok=True)
        self.store = LabelStore(run_dir / LABEL_STORE, **self.store_meta, task_description=c.task_description)
        self.rng = np.random.default_rng(seed + 7)
        self.generator = torch.Generator(device=device).manual_seed(seed + 11)
        self.rounds = 0
        self.last_round_step = -1
        self.consumed: set[int] = set()  # ids of the store's label rows the loop holds (trained, held out, skipped)
        self.label_ids = torch.zeros(0, dtype=torch.int64)  # store label id of each learner row (-1: labels_from)
        self.labelled_features: torch.Tensor | None = None
        self.holdout: list[tuple[Segments, Segments, np.ndarray, np.ndarray]] = []  # shown pairs, labels, label ids
        self.seconds = {"reward_learning": 0.0, "relabel": 0.0}
        self.counts = {"labels": 0, "skipped": 0, "equal": 0, "withdrawn": 0}
        if c.labels_from:
            self._load_prior_labels(Path(c.labels_from))

    # --------------------------------------------------------------------------------------------- phases
    @property
    def first_round_step(self) -> int:
        return self.learning_starts + self.config.unsup_steps

    def unsupervised(self, step: int) -> bool:
        """True while the agent should train on the state-entropy reward (before the first reward is learned)."""
        return step < self.first_round_step if self.rounds == 0 else not self.has_reward

    @property
    def has_reward(self) -> bool:
        """Whether the reward model has been trained on any label yet (people may not have answered)."""
        return len(self.learner) > 0

    def round_due(self, step: int) -> bool:
        if self.budget.remaining <= 0:
            return False
        if self.rounds == 0:
            return step >= self.first_round_step
        return step - self.last_round_step >= self.config.query_every

    def intrinsic_rewards(self, next_obs: torch.Tensor, buffer: ReplayBuffer) -> torch.Tensor:
        """kNN state-entropy rewards of `next_obs` against every stored next observation."""
        return self.entropy(next_obs, buffer.storage["next_obs"][: len(buffer)])

    # ---------------------------------------------------------------------------------------------- round
    def run_round(self, step: int, buffer: ReplayBuffer, stride: int, recent_returns: Sequence[float],
                  recent: int | None = None, status: Callable[[str | None], None] | None = None) -> dict[str, float]:
        """One feedback round; returns metrics to log. The caller relabels its replay buffer afterwards (if
        `has_reward`). `status` receives progress text while the round waits for people."""
        c = self.config
        started = time.perf_counter()
        first = self.rounds == 0
        num = self.budget.take(self.schedule.queries_for_round(step, self.total_steps, self.budget.remaining))
        stored_length = c.segment_length + 2 * self.window
        sampler = "uniform" if first else c.sampler
        candidates = num if sampler == "uniform" else num * c.candidate_factor
        left, right = self._pairs(buffer, candidates, stored_length, stride, recent)
        if self.teacher is not None and self.teacher.wants_candidates:  # e.g. HERON's margins: spread of the pool
            self.teacher.observe_candidates(self._shown(Segments.concat([left, right]).to("cpu")))
        if first:
            self.model.fit_input_stats(self._recent_transitions(buffer, 100_000))
        chosen = select_queries(sampler, left, right, num, model=self.learner, rng=self.rng,
                                labelled_features=self.labelled_features)
        left, right = left[chosen].to("cpu"), right[chosen].to("cpu")
        query_ids = self._store(left, right, sampler)
        if self.human:
            self._wait_for_people(query_ids, status)
        else:
            assert self.teacher is not None
            self.teacher.observe_returns(self._teacher_returns(buffer, recent_returns, stride), c.segment_length,
                                         self.max_episode_steps)
            self.store.add_labels(query_ids, self.teacher.label(self._shown(left), self._shown(right), self.rng),
                                  labeller=self.labeller)
        self._sync_with_store()
        if c.surf.enabled and c.surf.unlabeled_ratio > 0:
            self.learner.add_unlabelled(*self._pairs(buffer, num * c.surf.unlabeled_ratio, stored_length, stride,
                                                     recent))
        metrics: dict[str, float] = {}
        if len(self.learner):
            metrics.update({f"reward/{k}": v for k, v in self.learner.train().items()})
            self.model.fit_output_stats(self._recent_transitions(buffer, 10_000))
        self.rounds += 1
        self.last_round_step = step
        self.seconds["reward_learning"] += time.perf_counter() - started
        metrics.update(self.diagnostics(buffer, stride, recent))
        metrics.update({"reward/round": float(self.rounds), "reward/queries": float(self.budget.spent),
                        **{f"reward/{k}": float(v) for k, v in self.counts.items()},
                        "time/reward_learning_s": self.seconds["reward_learning"]})
        return metrics

    def _shown(self, segments: Segments) -> Segments:
        """The part of stored segments that teachers and people judge (SURF's learner keeps `window` more steps)."""
        return segments.crop(self.window, self.config.segment_length) if self.window else segments

    def _sync_with_store(self) -> LabelledPairs:
        """Make the learner hold exactly the labels that count in the store (see the module docstring): withdraw
        the undone or replaced ones, add the new ones. Returns the new ones."""
        withdrawn = self.consumed - self.store.effective_label_ids(self.labeller)
        if withdrawn:
            self._withdraw(withdrawn)
        pairs = self.store.labelled_pairs(include_skipped=True, labeller=self.labeller, exclude_labels=self.consumed,
                                          widen=self.window)
        self._add_labelled(pairs)
        return pairs

    def _add_labelled(self, pairs: LabelledPairs) -> None:
        """Hand new labels to the learner (keeping `holdout_fraction` of them out to measure accuracy)."""
        self.consumed.update(int(i) for i in pairs.label_ids)
        labels, ids = pairs.labels, pairs.label_ids
        if len(labels) == 0:
            return
        device = self.model.device
        left, right = pairs.left.to(device), pairs.right.to(device)
        shown_left, shown_right = self._shown(left), self._shown(right)
        features = query_features(shown_left, shown_right)
        self.labelled_features = features if self.labelled_features is None else \
            torch.cat([self.labelled_features, features])
        train_mask = np.ones(len(labels), dtype=bool)
        if self.config.holdout_fraction > 0:
            train_mask = self.rng.random(len(labels)) >= self.config.holdout_fraction
            if (~train_mask).any():
                keep = ~train_mask
                self.holdout.append((shown_left[keep], shown_right[keep], labels[keep], ids[keep]))
        train_mask &= labels != Label.SKIP
        self.learner.add_labels(left[train_mask], right[train_mask], labels[train_mask])
        self.label_ids = torch.cat([self.label_ids, torch.as_tensor(ids[train_mask], dtype=torch.int64)])
        self._count(labels)

    def _withdraw(self, label_ids: set[int]) -> None:
        """Forget labels that no longer count (undone, or replaced by a newer answer of the same labeller)."""
        gone = torch.tensor(sorted(label_ids), dtype=torch.int64)
        keep = ~torch.isin(self.label_ids, gone)
        self.learner.keep_labels(keep)
        self.label_ids = self.label_ids[keep]
        self.holdout = [(left[kept], right[kept], labels[kept], ids[kept]) for left, right, labels, ids in self.holdout
                        if (kept := ~np.isin(ids, gone.numpy())).any()]
        self.consumed -= label_ids
        self.counts["withdrawn"] += len(label_ids)

    def _teacher_returns(self, buffer: ReplayBuffer, env_returns: Sequence[float], stride: int) -> list[float]:
        """The latest episode returns on the scale of the teacher's reward (its skip/equal thresholds follow them):
        `env_returns` when it judges the env reward; with `teacher_weights`, the returns of components @ weights of
        the latest episodes that lie wholly in the buffer's newest steps (none yet: the thresholds stay)."""
        if not self.config.teacher_weights:
            return list(env_returns)
        s = buffer.storage
        index = buffer.chronological_indices()[-(RECENT_EPISODES + 1) * self.max_episode_steps * stride:]
        episode = s["episode_id"][index].cpu().numpy()
        done = ((s["terminated"][index] > 0) | s["truncated"][index].bool()).cpu().numpy()
        rewards = self.true_reward({"components": s["components"][index]}).double().cpu().numpy()
        ended = episode[done]  # in the order the episodes ended
        complete = ended[np.isin(ended, episode[(s["episode_step"][index] == 0).cpu().numpy()])]
        return [float(rewards[episode == e].sum()) for e in complete[-RECENT_EPISODES:]]

    def _wait_for_people(self, query_ids: Sequence[int], status: Callable[[str | None], None] | None) -> None:
        """Block until every query of this round has an answer or `human_timeout` seconds pass (never forever)."""
        asked = set(query_ids)
        deadline = time.monotonic() + self.config.human_timeout
        while True:
            waiting = asked.intersection(self.store.pending_queries())
            left = deadline - time.monotonic()
            if not waiting or left <= 0:
                return
            if status is not None:
                status(f"waiting for labels: {len(asked) - len(waiting)}/{len(asked)} answered, {left:.0f} s left "
                       f"(label with: robotrl label {self.run_dir})")
            time.sleep(min(POLL_SECONDS, left))

    def _pairs(self, buffer: ReplayBuffer, count: int, length: int, stride: int, recent: int | None
               ) -> tuple[Segments, Segments]:
        segments = segments_from_buffer(buffer, *buffer.segment_indices(length, 2 * count, stride, self.generator,
                                                                         recent))
        return segments[:count], segments[count:]

    def _store(self, left: Segments, right: Segments, sampler: str) -> list[int]:
        """Store the pairs as queries of the segments to judge; with SURF the learner's wider segments first."""
        sides = []
        for segments in (left, right):
            if self.window:
                self.store.add_segments(segments, self.run_name)
            sides.append(self.store.add_segments(self._shown(segments), self.run_name))
        return self.store.add_queries(*sides, round=self.rounds, sampler=sampler)

    def _count(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels)
        self.counts["labels"] += int(len(labels))
        self.counts["skipped"] += int((labels == Label.SKIP).sum())
        self.counts["equal"] += int((labels == Label.EQUAL).sum())

    def _recent_transitions(self, buffer: ReplayBuffer, count: int, keys: Sequence[str] = ()
                            ) -> dict[str, torch.Tensor]:
        """The latest `count` stored transitions: the reward model's fields plus `keys`."""
        index = buffer.chronological_indices()[-count:]
        return {k: buffer.storage[k][index] for k in {*self.model.fields, *keys}}

    # -------------------------------------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def diagnostics(self, buffer: ReplayBuffer, stride: int, recent: int | None = None) -> dict[str, float]:
        """Held-out preference accuracy and how well learned segment returns track true ones on fresh data (nothing
        while no reward has been learned yet, e.g. before a person's first answer)."""
        c = self.config
        out: dict[str, float] = {}
        if not self.has_reward:
            return out
        if self.holdout:
            left = Segments.concat([h[0] for h in self.holdout]).to(self.model.device)
            right = Segments.concat([h[1] for h in self.holdout]).to(self.model.device)
            out["reward/holdout_accuracy"] = self.learner.accuracy(left, right, np.concatenate([h[2] for h in
                                                                                               self.holdout]))
        if c.diagnostic_pairs > 0 and len(buffer) > stride * c.segment_length:
            fresh = min(len(buffer), max(20_000, 4 * stride * c.segment_length))
            left, right = self._pairs(buffer, c.diagnostic_pairs, c.segment_length, stride, fresh)
            labels = self.oracle.label(left.to("cpu"), right.to("cpu"), self.rng)
            segments = Segments.concat([left, right])
            true = torch.as_tensor(self.oracle.step_rewards(segments.to("cpu"))).sum(1)
            labels[np.isclose(true[: len(left)].numpy(), true[len(left):].numpy())] = Label.EQUAL  # ties say nothing
            out["reward/true_pref_accuracy"] = self.learner.accuracy(left, right, labels)
            learned = self.model(segments.transitions()).reshape(len(segments), -1)
            learned = learned.masked_fill(segments.absorbing, 0.0).sum(1)
            out["reward/return_correlation"] = _pearson(learned.cpu().double(), true.double())
        if c.starc_samples > 0 and len(buffer) >= 1000:
            out["reward/starc_distance"] = self.starc_distance(buffer, c.starc_samples)
        return out

    @torch.no_grad()
    def starc_distance(self, buffer: ReplayBuffer, samples: int) -> float:
        """STARC-VAL distance (0 = same policy ordering, 1 = opposite) between the learned and the true reward on
        the latest `samples` stored transitions under the agent's discount (`reward_learning.comparison_sampled`)."""
        batch = self._recent_transitions(buffer, samples, ("obs", "action", "next_obs", "env_reward", "components",
                                                             "terminated", "truncated"))
        sources = {"learned": self.reward_source, "true": self.true_reward}
        comparison = compare_rewards(sources, batch, "starc_val", gamma=self.gamma, device=str(self.model.device))
        return float(comparison.distances[0, 1])

    # ---------------------------------------------------------------------------------------------- state
    def _load_prior_labels(self, path: Path) -> None:
        """Train on the labels of an existing store before the first round (they do not use the budget)."""
        if not path.exists():
            raise ConfigError(f"reward.preference.labels_from: no label store at {path}")
        surf = f"; SURF (window {self.window}) trains on wider segments, which only stores of SURF runs with " \
               f"that window hold: turn SURF off to learn from this store" if self.window else ""
        try:
            with LabelStore(path, create=False, **self.store_meta) as prior:
                pairs = prior.labelled_pairs(widen=self.window)
        except ValueError as err:  # another task's store, not a label store at all, or no SURF segments
            raise ConfigError(f"reward.preference.labels_from: {err}{surf}") from None
        if len(pairs.labels) == 0:
            raise ConfigError(f"reward.preference.labels_from: {path} holds no usable labels")
        shown = pairs.left.length - 2 * self.window
        if shown != self.config.segment_length:
            raise ConfigError(f"reward.preference.labels_from: stored segments have {shown} steps but this run "
                              f"labels {self.config.segment_length}-step segments")
        device = self.model.device
        self.learner.add_labels(pairs.left.to(device), pairs.right.to(device), pairs.labels)
        self.label_ids = torch.full((len(pairs.labels),), -1, dtype=torch.int64)  # never withdrawn by this store

    def resync_from_store(self) -> int:
        """After a resume: catch up with the store (labels the checkpoint missed after a kill between the two
        writes, or that people gave, undid or changed while the run was down); returns the number of new labels."""
        pairs = self._sync_with_store()
        if not self.human:  # people's queries were paid for when they were asked
            self.budget.spent = min(self.budget.total, self.budget.spent + len(set(pairs.query_ids.tolist())))
        return len(pairs.labels)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "learner": self.learner.state_dict(),
                "teacher": self.teacher.state_dict() if self.teacher else {}, "budget": self.budget.state_dict(),
                "entropy": self.entropy.state_dict(), "rng": self.rng.bit_generator.state,
                "generator": self.generator.get_state(), "rounds": self.rounds,
                "last_round_step": self.last_round_step, "consumed_labels": sorted(self.consumed),
                "label_ids": self.label_ids,
                "labelled_features": self.labelled_features, "holdout": self.holdout, "seconds": self.seconds,
                "counts": self.counts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.learner.load_state_dict(state["learner"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.budget.load_state_dict(state["budget"])
        self.entropy.load_state_dict(state["entropy"])
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
        self.rounds, self.last_round_step = state["rounds"], state["last_round_step"]
        device = self.model.device  # checkpoints load on the CPU; new labels come on the model's device
        features = state["labelled_features"]
        self.labelled_features = None if features is None else features.to(device)
        self.holdout = [(left.to(device), right.to(device), *rest) for left, right, *rest in state["holdout"]]
        if "consumed_labels" in state:
            self.consumed, self.label_ids = set(state["consumed_labels"]), state["label_ids"]
        else:  # a checkpoint that tracked query ids: its labels stay for good (they cannot be told apart)
            known, current = set(state["known_queries"]), self.store.effective_label_ids(self.labeller)
            self.consumed = {r.id for r in self.store.labels() if r.query_id in known and r.id in current}
            self.label_ids = torch.full((len(self.learner),), -1, dtype=torch.int64)
            self.holdout = [(*h, np.full(len(h[2]), -1)) for h in self.holdout]
        self.seconds, self.counts = state["seconds"], {**self.counts, **state["counts"]}

    def save_model(self) -> Path:
        """Write the reward model next to the checkpoint (loadable with `RewardEnsemble.load`)."""
        path = self.run_dir / REWARD_MODEL
        self.model.save(path)
        return path

    def close(self) -> None:
        self.store.close()
        if self.teacher is not None:
            self.teacher.close()


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else float("nan")

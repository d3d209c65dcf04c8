"""`robotrl reward refine`: Text2Reward's refinement loop on short robotrl training runs.

Three kinds of feedback reach the LLM's refinement prompt (`reward_learning.text2reward.refinement_messages`):

- Automatic (Eureka): each iteration trains a policy on the current reward code for `steps` env steps
  (`RewardTrainer`) and reports the code's per-term statistics over the run's replay buffer, the env's own mean
  evaluation return and, where the env reports success, the success rate. The statistics cover the policy's own
  newest transitions (those after `learning_starts`, at most `TERM_STAT_ROWS`): the random warm-up says nothing
  about the policy, and the stored buffer costs no extra rollouts.
  Code that validates but fails during the run (e.g. on the policy's states) ends that run, and its error is
  the feedback; in a ranking round such a candidate is left out.
- Typed (Text2Reward): with a person present (`answers`), each iteration shows those numbers and reads one line
  for the LLM (`ask_person`); an empty line sends the statistics only, "q" stops.
- Ranked videos (ICPL): each iteration trains K candidate rewards, records one deterministic evaluation episode of
  each policy with simulator states, stores the first steps of each as one segment of a fresh label store with a
  query per pair of candidates, serves the labelling page and ranks the candidates by pairwise wins
  (`rank_candidates`). The next prompt is the best candidate's code with its statistics and the person's
  preference, showing the code they liked least.

Every iteration keeps its folder. `refine<i>/`: trained_reward.py and the run on it (`run/`: config, metrics,
checkpoint), feedback.json, the prompt, replies and the refined reward.py; the last valid one becomes
`refined_reward.py`. `rank<i>/`: the candidates' generation provenance (`generation/`), per candidate its code and run
(`candidate<j>/`), labels.sqlite, ranking.json and feedback.json (what the next prompt says); the last ranked round's
favourite becomes `best_reward.py`.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from reward_learning.code_check import RewardCodeError, check_code
from reward_learning.env_descriptions import TaskDescription
from reward_learning.label_store import LabelStore
from reward_learning.segments import Label, Segments
from reward_learning.text2reward import (
    ChatModel,
    GenerationConfig,
    GenerationResult,
    StopRefinement,
    TrainingFeedback,
    Validator,
    generate_reward,
    iteration_dir,
    own_code,
    refine_reward,
    refinement_messages,
    stats_table,
    term_statistics,
)
from robotrl.agents import AGENTS
from robotrl.config import ConfigError, load_config
from robotrl.offline_queries import buffer_from_rollouts, task_layout
from robotrl.preference import segments_from_buffer
from robotrl.trainer import Trainer, TrainingDiverged, sandboxed_reward

TERM_STAT_ROWS = 50_000  # newest policy transitions the term statistics are computed on
TRAINED_CODE = "trained_reward.py"  # the code a folder's run trained on
REFINED = "refined_reward.py"  # the automatic loop's final code (refined from the last run's feedback)
BEST = "best_reward.py"  # the ranking loop's final code (the person's favourite of the last round)

Waiter = Callable[[Path, Sequence[int]], None]  # (label store, query ids): returns once they are labelled


# ------------------------------------------------------------------------------------------------- training
def default_config(env_id: str, steps: int) -> dict[str, Any]:
    """A short SAC run: random actions for the first tenth of the steps (at most 5000), one 5-episode evaluation at
    the end."""
    return {"name": "refine", "env": {"id": env_id}, "algo": {"name": "sac", "learning_starts": min(5000, steps // 10)},
            "train": {"eval_every": 0, "eval_episodes": 5, "checkpoint_every": steps}}


def base_config(env_id: str, config_path: str | Path | None, steps: int) -> dict[str, Any]:
    """The raw run config every refinement run starts from: the YAML at `config_path` (for `env_id`, with an
    off-policy algorithm, whose replay buffer gives the term statistics) or `default_config`."""
    source = "the built-in SAC setting" if config_path is None else str(config_path)
    raw = default_config(env_id, steps) if config_path is None else load_config(config_path).model_dump(mode="json")
    config = load_config(None, base=raw)
    if config.env.id != env_id:
        raise ConfigError(f"--config {config_path} is for env {config.env.id}, not {env_id}: pass a config for "
                          f"{env_id} (or none, for a short SAC run)")
    if AGENTS[config.algo.name].on_policy:
        raise ConfigError(f"{source}: algo {config.algo.name} is on-policy, but refinement reads the reward terms "
                          f"from the run's replay buffer; use an off-policy algorithm such as sac or td3")
    starts = getattr(config.algo, "learning_starts", 0)
    if steps <= starts:
        raise ConfigError(f"--steps {steps} must exceed algo.learning_starts ({starts}) of {source}: the run would "
                          f"only take random actions")
    return raw


@dataclass(frozen=True)
class TrainedReward:
    """One short training run on a reward code: the code's file, the run directory, and what the run showed."""

    code_path: Path
    run_dir: Path
    feedback: TrainingFeedback


class RewardTrainer:
    """Trains short robotrl runs with `reward.source: code` from a base config (`base_config`), one folder each."""

    def __init__(self, base: Mapping[str, Any], steps: int, out_dir: str | Path, progress: bool = False) -> None:
        """`out_dir` must be new or empty, so that its iterations never mix with an earlier refinement's."""
        self.base, self.steps, self.out_dir, self.progress = base, steps, Path(out_dir), progress
        if self.out_dir.is_dir() and any(self.out_dir.iterdir()):
            raise ValueError(f"{self.out_dir} already holds files of an earlier refinement; pass a new --out folder")
        self.calls = 0

    def __call__(self, code: str) -> TrainingFeedback:
        """The refinement loop's `train(code)`: call i trains in `iteration_dir(out_dir, i)`."""
        self.calls += 1
        return self.train(code, iteration_dir(self.out_dir, self.calls)).feedback

    def train(self, code: str, directory: Path) -> TrainedReward:
        """Write `code` to `directory`, train a run on it in `directory/run` and gather its feedback."""
        directory.mkdir(parents=True, exist_ok=True)
        code_path = directory / TRAINED_CODE
        code_path.write_text(code)
        raw = copy.deepcopy(dict(self.base))
        reward = raw.setdefault("reward", {})
        reward["source"] = "code"
        reward.setdefault("code", {})["path"] = str(code_path)
        raw.setdefault("train", {})["total_steps"] = self.steps
        config = load_config(None, base=raw)
        say(f"  training on {code_path} for {self.steps} steps ({config.algo.name}) ...")
        started = time.perf_counter()
        trainer = Trainer(config, run_dir=directory / "run", progress=self.progress)
        try:
            result = trainer.train()
        except (RewardCodeError, TrainingDiverged) as err:  # e.g. valid on random transitions, not the policy's
            feedback = TrainingFeedback({}, trainer.step, error=str(err))
            say(f"  the run stopped after {trainer.step} steps: {err}")
            return TrainedReward(code_path, trainer.run_dir, feedback)
        feedback = TrainingFeedback(policy_term_statistics(trainer), result.steps,
                                    result.final_eval.get("eval/success_rate"), result.final_eval.get("eval/return"))
        say(f"  run {trainer.run_dir} done in {time.perf_counter() - started:.0f} s: {summary_line(feedback)}")
        return TrainedReward(code_path, trainer.run_dir, feedback)


def policy_term_statistics(trainer: Trainer) -> dict[str, dict[str, float]]:
    """Statistics of the reward code's total and terms over a trained run's newest transitions after its random
    warm-up (at most `TERM_STAT_ROWS`), evaluated in the sandbox on the run's copy of the code."""
    buffer = trainer.buffer
    policy_rows = trainer.step - getattr(trainer.config.algo, "learning_starts", 0)
    index = buffer.chronological_indices()[-min(policy_rows, TERM_STAT_ROWS, len(buffer)):]
    reward = sandboxed_reward(trainer.config, trainer.component_names, trainer.run_dir)
    try:
        total, terms = reward.evaluate({key: buffer.storage[key][index].cpu().float() for key in reward.needs})
    finally:
        reward.close()
    return term_statistics(total.numpy(), {name: values.numpy() for name, values in terms.items()})


def summary_line(feedback: TrainingFeedback) -> str:
    """The run's evaluation return and success rate in a few words."""
    success = "n/a" if feedback.success_rate is None else f"{feedback.success_rate:.1%}"
    env_return = "n/a" if feedback.env_return is None else f"{feedback.env_return:.4g}"
    return f"env return {env_return}, success rate {success}"


def say(text: str) -> None:
    """Progress output (flushed, as training runs take a while between lines)."""
    print(text, flush=True)


# ---------------------------------------------------------------------------------------------- typed feedback
def ask_person(feedback: TrainingFeedback, answers: TextIO) -> TrainingFeedback:
    """Read one line for the LLM from `answers` and add it to the feedback's `human` text; an empty line (or end of
    input) adds nothing, "q" raises `StopRefinement`."""
    say("Your feedback for the LLM (Enter: send the statistics only; q: stop refining):")
    text = answers.readline().strip()
    if text.lower() == "q":
        raise StopRefinement
    return replace(feedback, human="\n".join(part for part in (feedback.human, text) if part) or None)


def refine_automatically(client: ChatModel, goal: str, description: TaskDescription, code: str,
                         trainer: RewardTrainer, validate: Validator, iterations: int,
                         config: GenerationConfig | None = None, answers: TextIO | None = None) -> Path | None:
    """Eureka's loop (with a person's typed feedback when `answers` is given): train on the code, refine it from the
    run's feedback, `iterations` times. Writes the last valid refinement to `<out>/refined_reward.py` and returns
    its path, or None when no refinement gave valid code."""

    def train(current: str) -> TrainingFeedback:
        if trainer.calls:
            say(f"  the LLM's refinement is valid: {iteration_dir(trainer.out_dir, trainer.calls) / 'reward.py'}")
        say(f"iteration {trainer.calls + 1}/{iterations}:")
        feedback = trainer(current)
        say(stats_table(feedback.term_stats))
        if answers is not None:
            say(f"watch the policy with: robotrl eval {iteration_dir(trainer.out_dir, trainer.calls) / 'run'} --video")
            feedback = ask_person(feedback, answers)
        say("  asking the LLM for a refined reward ...")
        return feedback

    results = refine_reward(client, goal, description, code, train, validate, iterations, config, trainer.out_dir)
    for iteration, result in enumerate(results, 1):
        say(f"replies of iteration {iteration}:")
        print_attempts(result)
    codes = [result.code for result in results if result.code is not None]
    if not codes:
        return None
    final = trainer.out_dir / REFINED
    final.write_text(codes[-1])
    return final


def print_attempts(result: GenerationResult) -> None:
    """One line per LLM reply: valid, or why it was rejected."""
    for attempt in result.attempts:
        status = "valid" if attempt.error is None else \
            f"rejected ({attempt.error_kind}): {attempt.error.splitlines()[0][:150]}"
        say(f"sample {attempt.sample} round {attempt.round}: {status} [{attempt.seconds:.1f} s]")


def initial_code(path: Path, description: TaskDescription, validate: Validator) -> str:
    """The reward code to refine, read from `path` and bound to the task's fields, checked and run in the sandbox;
    raises FileNotFoundError or `RewardCodeError` with the reason."""
    if not path.is_file():
        raise FileNotFoundError(f"no reward code file at {path}")
    code = description.bind(path.read_text())
    check_code(code)
    validate(code)
    return code


# ------------------------------------------------------------------------------------------------ video ranking
@dataclass(frozen=True)
class Score:
    """A candidate's pairwise record in a ranking; `score` counts an 'equal' as half a win."""

    candidate: int
    wins: int = 0
    losses: int = 0
    equal: int = 0

    @property
    def score(self) -> float:
        return self.wins + 0.5 * self.equal


def rank_candidates(store: LabelStore, owners: Mapping[int, int]) -> list[Score]:
    """The candidates (values of `owners`, which maps segment ids to candidates) best first, by pairwise wins over
    every labeller's latest label of each query; skips count for no one. Ties keep the candidates' order."""
    wins: Counter[int] = Counter()
    losses: Counter[int] = Counter()
    equal: Counter[int] = Counter()
    pairs = store.labelled_pairs()
    sides = store.query_segments(pairs.query_ids.tolist())
    for (left, right), label in zip(sides, pairs.labels.tolist(), strict=True):
        a, b = owners[left], owners[right]
        if label == Label.EQUAL:
            equal.update((a, b))
        else:
            winner, loser = (a, b) if label == Label.LEFT else (b, a)
            wins[winner] += 1
            losses[loser] += 1
    scores = [Score(c, wins[c], losses[c], equal[c]) for c in sorted(set(owners.values()))]
    return sorted(scores, key=lambda s: (-s.score, s.losses, s.candidate))


def policy_segment(run_dir: Path, steps: int, seed: int) -> Segments:
    """The first `steps` steps (fewer when the episode ends sooner) of one deterministic episode of a run's policy,
    with simulator states so that the labelling page can render them."""
    _, buffer = buffer_from_rollouts(run_dir, 1, seed, deterministic=True, max_steps=steps)
    index = torch.arange(min(steps, len(buffer)))[None]
    return segments_from_buffer(buffer, index, torch.zeros_like(index, dtype=torch.bool))


def comparison_store(path: Path, env_id: str, env_kwargs: Mapping[str, Any], goal: str,
                     segments: Mapping[int, Segments], seed: int) -> tuple[list[int], dict[int, int]]:
    """A new label store at `path` holding one segment per candidate (`segments`: candidate number -> its segment)
    and a query per pair of candidates (sides shuffled, seeded); returns the query ids and the map of segment id to
    candidate number."""
    adapter, names, obs_shape = task_layout(env_id, dict(env_kwargs))
    with LabelStore(path, env_id=env_id, obs_shape=obs_shape, action_dim=adapter.stored_dim, component_names=names,
                    task_description=goal) as store:
        ids = {i: store.add_segments(segment, run=f"candidate{i}")[0] for i, segment in segments.items()}
        rng = np.random.default_rng(seed)
        pairs = [(a, b) if rng.random() < 0.5 else (b, a) for a, b in itertools.combinations(ids.values(), 2)]
        query_ids = store.add_queries([a for a, _ in pairs], [b for _, b in pairs], round=0, sampler="all_pairs")
    return query_ids, {segment: candidate for candidate, segment in ids.items()}


def serve_until_labelled(store_path: Path, query_ids: Sequence[int], port: int = 0, poll_seconds: float = 1.0
                         ) -> None:
    """Serve the labelling page for a store on 127.0.0.1 and return once every query in `query_ids` is labelled,
    or on Ctrl+C (the ranking then uses the labels given so far)."""
    from robotrl.labelling import LabelServer

    server = LabelServer(store_path, "127.0.0.1", port).start()
    try:
        say(f"  compare the policies: open {server.url} and label all {len(query_ids)} pairs (Ctrl+C: rank on the "
            f"labels given so far)")
        with LabelStore.open(store_path) as store:
            while set(store.pending_queries()) & set(query_ids):
                time.sleep(poll_seconds)
    except KeyboardInterrupt:
        say("  stopped waiting: ranking on the labels given so far")
    finally:
        server.stop()


def preference_text(best: Score, worst: Score, count: int, worst_code: str) -> str:
    """What the next prompt says about the person's ranking of `count` candidates."""
    def record(s: Score) -> str:
        return f"{s.wins} wins, {s.equal} ties, {s.losses} losses"

    return (f"A person watched videos of the policies trained on {count} candidate reward functions and compared "
            f"them in pairs. They preferred the behaviour produced by this reward over the others ({record(best)}). "
            f"They liked the behaviour produced by this candidate least ({record(worst)}):\n```python\n"
            f"{own_code(worst_code)}\n```\nKeep what makes this reward's behaviour better and avoid what the least "
            f"liked one rewards.")


@dataclass(frozen=True)
class Candidate:
    """A candidate reward of a ranking round and its training run."""

    code: str
    trained: TrainedReward


def refine_by_ranking(client: ChatModel, goal: str, description: TaskDescription, code: str | None,
                      trainer: RewardTrainer, validate: Validator, iterations: int, count: int,
                      config: GenerationConfig | None = None, video_steps: int = 100,
                      wait: Waiter = serve_until_labelled, answers: TextIO | None = None) -> Path | None:
    """ICPL's loop: `iterations` rounds of `count` candidate rewards (the first round's from the goal prompt, after
    `code` when given; later ones from the previous round's preference prompt), each trained, shown and ranked by a
    person (`wait` returns once the pairs are labelled). Writes the last ranked round's best candidate to
    `<out>/best_reward.py` and returns its path; None when no round could be ranked."""
    config = config or GenerationConfig()
    out = trainer.out_dir
    base = load_config(None, base=dict(trainer.base))
    best: Candidate | None = None
    messages = None
    for iteration in range(1, iterations + 1):
        directory = out / f"rank{iteration}"
        codes = [code] if iteration == 1 and code is not None else []
        say(f"round {iteration}/{iterations}: asking the LLM for {count - len(codes)} candidate rewards ...")
        sampling = replace(config.sampling, n=count - len(codes))
        result = generate_reward(client, goal, description, validate, replace(config, sampling=sampling),
                                 messages=messages, out_dir=directory / "generation")
        print_attempts(result)
        codes += result.valid_codes
        if len(codes) < 2:
            say(f"only {len(codes)} valid candidate(s): nothing to compare, stopping")
            break
        candidates = {}  # numbered as their folders; a failed run has no policy to show
        for i, candidate_code in enumerate(codes):
            say(f"candidate {i}:")
            trained = trainer.train(candidate_code, directory / f"candidate{i}")
            if trained.feedback.error is None:
                candidates[i] = Candidate(candidate_code, trained)
        if len(candidates) < 2:
            say(f"only {len(candidates)} candidate(s) trained to the end: nothing to compare, stopping")
            break
        say(f"  recording one episode of each policy ({video_steps} steps shown) ...")
        seed = base.seed + 1_000_000
        segments = {i: policy_segment(c.trained.run_dir, video_steps, seed) for i, c in candidates.items()}
        store_path = directory / "labels.sqlite"
        query_ids, owners = comparison_store(store_path, base.env.id, base.env.kwargs, goal, segments, seed)
        wait(store_path, query_ids)
        with LabelStore.open(store_path) as store:
            ranking = rank_candidates(store, owners)
        save_ranking(directory / "ranking.json", ranking, candidates, len(query_ids))
        say("  ranking: " + ", ".join(f"candidate {s.candidate} ({s.score:g})" for s in ranking))
        if ranking[0].score == ranking[-1].score:
            say("  the labels do not separate the candidates: stopping")
            break
        best, worst = candidates[ranking[0].candidate], candidates[ranking[-1].candidate]
        if iteration == iterations:
            break
        say(f"  candidate {ranking[0].candidate}, preferred:\n{stats_table(best.trained.feedback.term_stats)}")
        feedback = replace(best.trained.feedback, human=preference_text(ranking[0], ranking[-1], len(candidates),
                                                                         worst.code))
        if answers is not None:
            try:
                feedback = ask_person(feedback, answers)
            except StopRefinement:
                break
        (directory / "feedback.json").write_text(json.dumps(asdict(feedback), indent=1) + "\n")
        messages = refinement_messages(goal, description, best.code, feedback)
    if best is None:
        return None
    final = out / BEST
    final.write_text(best.code)
    return final


def save_ranking(path: Path, ranking: Sequence[Score], candidates: Mapping[int, Candidate], queries: int) -> None:
    """The ranking as JSON: per candidate (best first) its record, code file, run and training feedback."""
    rows = [{"rank": rank, "candidate": s.candidate, "score": s.score, "wins": s.wins, "losses": s.losses,
             "equal": s.equal, "code": str(candidates[s.candidate].trained.code_path),
             "run": str(candidates[s.candidate].trained.run_dir),
             "feedback": asdict(candidates[s.candidate].trained.feedback)} for rank, s in enumerate(ranking, 1)]
    path.write_text(json.dumps({"queries": queries, "best": ranking[0].candidate, "worst": ranking[-1].candidate,
                                "ranking": rows}, indent=1) + "\n")

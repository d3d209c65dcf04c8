"""`robotrl reward train|info|export|queries|check|generate|refine`: train a reward ensemble from an existing label
store, inspect a store, export its queries and labels, add queries cut from saved trajectories (for offline
labelling), check a file of LLM-written reward code in the sandbox, generate reward code for a goal with an LLM and
refine it from short training runs (`robotrl.refine`). `robotrl.cli` parses the arguments and calls the `cmd_*`
functions here.

A label store keeps discrete actions as one column (the action index), so its meta alone does not say whether actions
are discrete: for a store of action width 1, `reward train` builds the env once (`envs.make(env_id).action_space`)
and one-hot encodes actions for the reward model when the space is `Discrete`.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import functools
import io
import json
import sqlite3
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import ValidationError

from reward_learning.env_descriptions import TaskDescription
from reward_learning.label_store import LabelRecord, LabelStore
from reward_learning.models import RewardEnsemble, RewardModelConfig
from reward_learning.preferences import RewardLearner
from reward_learning.segments import Label
from robotrl.config import ConfigError, apply_override, load_config
from robotrl.preference import LABEL_STORE, REWARD_MODEL

if TYPE_CHECKING:
    from reward_learning.text2reward import GenerationConfig, Validator

KINDS = tuple(label.name.lower() for label in Label)
EXPORT_FIELDS = ("label_id", "query_id", "left_segment", "left_run", "left_episode", "left_start", "left_length",
                 "right_segment", "right_run", "right_episode", "right_start", "right_length", "label", "labeller",
                 "created", "latest", "retracted")


def open_store(spec: str | Path) -> LabelStore:
    """Open an existing label store from its file or from a run directory holding `labels.sqlite`."""
    path = Path(spec)
    if path.is_dir():
        if not (path / LABEL_STORE).exists():
            raise FileNotFoundError(f"no label store in directory {path}: pass the .sqlite file or a run directory "
                                    f"that holds {LABEL_STORE}")
        path = path / LABEL_STORE
    try:
        return LabelStore.open(path)
    except sqlite3.OperationalError as err:  # locked or unreadable: the message says which file
        raise ValueError(str(err)) from None


# ------------------------------------------------------------------------------------------------------ train
def model_config(config_path: str | None, env_id: str, overrides: list[str], epochs: int | None
                 ) -> RewardModelConfig:
    """`reward.preference.model` of a run config (file or run directory) or the defaults, with `model.*` overrides;
    a config made for another env than the store's is an error."""
    base = RewardModelConfig()
    if config_path is not None:
        path = Path(config_path)
        if path.is_dir():
            if not (path / "config.yaml").exists():
                raise ConfigError(f"--config {path} is a directory without config.yaml; pass a YAML config or a run "
                                  f"directory")
            path = path / "config.yaml"
        config = load_config(path)
        if config.env.id != env_id:
            raise ConfigError(f"config {path} is for env {config.env.id} but the label store holds labels of env "
                              f"{env_id}; pass a config for {env_id} (or none, for the default reward model)")
        base = config.reward.preference.model
    raw: dict[str, Any] = {"model": base.model_dump()}
    for override in overrides:
        if override.split("=", 1)[0].split(".")[0].strip() != "model":
            raise ConfigError(f"override '{override}': reward train takes model.<key>=value overrides (the keys of "
                              f"reward.preference.model, e.g. model.hidden_sizes=[64,64])")
        apply_override(raw, override)
    if epochs is not None:
        raw["model"]["max_epochs"] = epochs
    try:
        return RewardModelConfig.model_validate(raw["model"])
    except ValidationError as err:
        problems = []
        for problem in err.errors():
            key = ".".join(["model", *(str(p) for p in problem["loc"])])
            if problem["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(problem["loc"][-1]), list(RewardModelConfig.model_fields), n=3)
                problems.append(f"{key}: unknown key" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            else:
                problems.append(f"{key}: {problem['msg']} (got {problem.get('input')!r})")
        raise ConfigError(f"invalid reward model override: {'; '.join(problems)}") from None


def discrete_action_count(env_id: str, stored_action_dim: int) -> int | None:
    """Number of discrete actions of `env_id`, or None for continuous actions (see the module docstring)."""
    if stored_action_dim != 1:
        return None
    import envs
    from robotrl.spaces import ActionAdapter

    env = envs.make(env_id, render_mode=None)
    try:
        adapter = ActionAdapter.from_space(env.action_space)
    finally:
        env.close()
    return adapter.action_dim if adapter.discrete else None


def split_queries(query_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out pairs: a seeded `fraction` of the distinct queries (so two labellers' answers to one
    query land on the same side), at least one when fraction > 0 and at least one query stays for training."""
    unique = np.unique(query_ids)
    count = 0 if fraction <= 0 else min(max(int(round(fraction * len(unique))), 1), len(unique) - 1)
    held = np.random.default_rng(seed).permutation(unique)[:count]
    return np.isin(query_ids, held)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a reward ensemble on a store's labelled pairs, report accuracies and save it."""
    from robotrl.core.device import resolve_device, set_torch_threads

    if not 0.0 <= args.holdout < 1.0:
        raise ValueError(f"--holdout must be in [0, 1), got {args.holdout}")
    device = resolve_device(args.device)
    set_torch_threads(args.threads)
    with open_store(args.labels) as store:
        config = model_config(args.config, store.env_id, args.overrides, args.epochs)
        pairs = store.labelled_pairs(include_skipped=True)
        store_path, env_id, obs_shape, components = store.path, store.env_id, store.obs_shape, store.component_names
        n_actions = discrete_action_count(env_id, store.action_dim)
        action_dim = n_actions or store.action_dim
    used = pairs.labels != Label.SKIP
    if not used.any():
        raise ValueError(f"label store {store_path} holds no usable labels ({len(pairs.labels)} skipped): label "
                         f"some queries first (see `robotrl reward info {store_path}`)")
    skipped = int((~used).sum())
    left, right, labels, query_ids = pairs.left[used], pairs.right[used], pairs.labels[used], pairs.query_ids[used]
    held = split_queries(query_ids, args.holdout, args.seed)
    train = ~held

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    model = RewardEnsemble(obs_shape, action_dim, config, discrete_actions=n_actions is not None,
                           component_dim=len(components)).to(device)
    train_left, train_right = left[train].to(device), right[train].to(device)
    flat = (train_left.transitions(), train_right.transitions())
    transitions = {k: torch.cat([flat[0][k], flat[1][k]]) for k in model.fields}
    model.fit_input_stats(transitions)
    learner = RewardLearner(model, seed=args.seed)
    learner.add_labels(train_left, train_right, labels[train])
    result = learner.train()
    model.fit_output_stats(transitions)
    held_accuracy = learner.accuracy(left[held], right[held], labels[held]) if held.any() else float("nan")
    seconds = time.perf_counter() - started

    out = Path(args.out) if args.out else store_path.parent / REWARD_MODEL
    replaced = out.exists()
    model.save(out)
    per_kind = "  ".join(f"{k} {int((labels == label).sum())}" for k, label in zip(KINDS, Label, strict=True)
                         if label != Label.SKIP)
    rows = [("label store", f"{store_path} ({env_id})"),
            ("pairs", f"{int(train.sum())} train / {int(held.sum())} held out ({skipped} skipped, not used)"),
            ("labels", per_kind),
            ("train accuracy", _fmt_accuracy(result["train_accuracy"])),
            ("held-out accuracy", _fmt_accuracy(held_accuracy)),
            ("epochs", f"{int(result['epochs'])} (max {config.max_epochs})"),
            ("seconds", f"{seconds:.1f}"),
            ("model", f"{out}{' (replaced the existing file)' if replaced else ''}")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def _fmt_accuracy(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.3f}"


# ------------------------------------------------------------------------------------------------------- info
def store_info(store: LabelStore) -> dict[str, Any]:
    """Meta and counts of a store as JSON-ready data."""
    counts = store.counts()
    return {"path": str(store.path),
            "meta": {k: list(v) if isinstance(v, tuple) else v for k, v in store.meta.items()},
            "counts": {k: counts[k] for k in ("steps", "segments", "queries", "labels", "labelled_queries",
                                              "pending")},
            "labels_by_kind": {k: counts[k] for k in KINDS},
            "labels_by_labeller": {k.split("/", 1)[1]: v for k, v in counts.items() if k.startswith("labeller/")}}


def cmd_info(args: argparse.Namespace) -> int:
    """Print a store's meta and counts, for people or (--json) for programs."""
    with open_store(args.db) as store:
        info = store_info(store)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    meta, counts = info["meta"], info["counts"]
    by_labeller = "  ".join(f"{who} {n}" for who, n in info["labels_by_labeller"].items()) or "-"
    rows = [("label store", info["path"]), ("env_id", meta["env_id"]), ("obs_shape", tuple(meta["obs_shape"])),
            ("action_dim", meta["action_dim"]), ("components", ", ".join(meta["component_names"]) or "-"),
            ("created", meta.get("created", "?")), ("schema_version", meta.get("schema_version", "?")),
            ("steps", counts["steps"]), ("segments", counts["segments"]), ("queries", counts["queries"]),
            ("labelled queries", counts["labelled_queries"]), ("pending queries", counts["pending"]),
            ("labels", f"{counts['labels']} (relabels included): "
                       + "  ".join(f"{k} {n}" for k, n in info["labels_by_kind"].items())),
            ("labellers", by_labeller)]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


# ----------------------------------------------------------------------------------------------------- export
def segment_refs(store: LabelStore) -> dict[int, tuple[str, int, int, int]]:
    """(run, episode, start, length) of every segment, read from the store's documented `segments` table through a
    read-only connection: LabelStore offers no public accessor for segment rows (`segments()` rebuilds the step data
    and drops the run name)."""
    con = sqlite3.connect(f"{store.path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT id, run, episode, start, length FROM segments").fetchall()
        return {i: (run, episode, start, length) for i, run, episode, start, length in rows}
    finally:
        con.close()


def export_rows(store: LabelStore) -> list[dict[str, Any]]:
    """One row per stored label (relabels and undone labels included; `latest` marks the one that counts for its
    query and labeller, `retracted` the undone ones), then one row per pending query with empty label fields."""
    records = store.labels()
    pending = store.pending_queries()
    query_ids = sorted({r.query_id for r in records} | set(pending))
    pairs = dict(zip(query_ids, store.query_segments(query_ids), strict=True))
    refs = segment_refs(store)
    latest = {(r.query_id, r.labeller): r.id for r in records if not r.retracted}

    def row(query: int, record: LabelRecord | None) -> dict[str, Any]:
        out: dict[str, Any] = {"label_id": record.id if record else None, "query_id": query}
        for side, segment in zip(("left", "right"), pairs[query], strict=True):
            run, episode, start, length = refs[segment]
            out.update({f"{side}_segment": segment, f"{side}_run": run, f"{side}_episode": episode,
                        f"{side}_start": start, f"{side}_length": length})
        out.update({"label": record.label.name.lower() if record else None,
                    "labeller": record.labeller if record else None, "created": record.created if record else None,
                    "latest": latest.get((query, record.labeller)) == record.id if record else None,
                    "retracted": record.retracted if record else None})
        return out

    return [row(r.query_id, r) for r in records] + [row(q, None) for q in pending]


def cmd_export(args: argparse.Namespace) -> int:
    """Write a store's queries and labels as JSON or CSV to a file or stdout."""
    with open_store(args.db) as store:
        write_export(store, args.format, args.out)
    return 0


def write_export(store: LabelStore, format: str, out_path: str | None) -> None:
    """Write `export_rows` of a store as JSON (with the store's meta) or CSV to a file, or stdout for None/'-'."""
    rows = export_rows(store)
    info = store_info(store)
    if format == "json":
        text = json.dumps({"label_store": info["path"], "meta": info["meta"], "rows": rows}, indent=1) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    if out_path in (None, "-"):
        sys.stdout.write(text)
        return
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    labelled = sum(r["label"] is not None for r in rows)
    print(f"exported {labelled} labels and {len(rows) - labelled} pending queries to {out}")


def cmd_queries(args: argparse.Namespace) -> int:
    """Add uniform query pairs from a run (buffer or rollouts) or a dataset to a label store, for offline labelling."""
    from robotrl import offline_queries as oq

    source = Path(args.source)
    stride = 1
    if source.is_dir():
        run = source.name
        if args.rollouts:
            run = oq.rollout_run_name(source, args.seed, Path(args.out))
            config, buffer = oq.buffer_from_rollouts(source, args.rollouts, args.seed, args.deterministic)
        else:
            config, buffer, stride = oq.buffer_from_run(source)
        env_id, kwargs = config.env.id, config.env.kwargs
    elif source.suffix == ".npz" and source.exists():
        if args.env is None:
            raise ValueError("a .npz dataset needs --env ENV_ID (the task it was recorded on)")
        env_id, kwargs, run = args.env, {}, source.stem
        buffer = oq.buffer_from_dataset(source, env_id)
    else:
        raise FileNotFoundError(f"{source} is neither a run directory nor an existing .npz dataset")
    adapter, names, obs_shape = oq.task_layout(env_id, kwargs)
    out = Path(args.out)
    with LabelStore(out, env_id=env_id, obs_shape=obs_shape, action_dim=adapter.stored_dim, component_names=names,
                    task_description=args.task) as store:
        queries = oq.write_queries(buffer, store, args.count, args.segment_length, args.seed, run, stride)
        pending = len(store.pending_queries())
    print(f"added {len(queries)} queries of {args.segment_length}-step segments from {source} to {out} "
          f"({pending} pending); label them with: robotrl label {out}")
    return 0


# ------------------------------------------------------------------------------------------------------ check
def sample_transitions(env_id: str, samples: int, seed: int, env_kwargs: Mapping[str, Any] | None = None
                       ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`samples` random-policy transitions of an env (seeded; `env_kwargs` for its constructor) and its reward
    component names, for checking or validating reward code."""
    from robotrl import offline_queries as oq
    from robotrl.compare_cli import buffer_transitions, random_policy_buffer

    _, components, _ = oq.task_layout(env_id, dict(env_kwargs or {}))
    buffer = random_policy_buffer(env_id, samples, None, seed, env_kwargs=env_kwargs)
    transitions = buffer_transitions(buffer, samples, seed)
    return transitions, components


def cmd_check(args: argparse.Namespace) -> int:
    """Check a reward-code file statically, then run it in the sandbox on random-policy transitions of an env and
    print per-term statistics; a rejected file prints the reason and exits with status 1."""
    from reward_learning.code_check import RewardCodeError, check_code
    from reward_learning.sandbox import SandboxedReward, SandboxLimits
    from reward_learning.text2reward import stats_table, term_statistics

    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"no reward code file at {path}")
    try:
        check_code(path.read_text())  # fail fast, before building the env
        transitions, components = sample_transitions(args.env, args.samples, args.seed)
        limits = SandboxLimits(cpu_seconds=args.timeout, wall_seconds=2 * args.timeout)
        with SandboxedReward.from_file(path, components, limits=limits, reject_constant=True) as reward:
            started = time.perf_counter()
            total, terms = reward.evaluate(transitions)
            seconds = time.perf_counter() - started
            inputs = ["obs", "action", "next_obs", *reward.inputs]
    except RewardCodeError as err:
        print(f"rejected: {path}: {err}", file=sys.stderr)
        return 1
    print(f"reward code  {path}: accepted (passed the static check, ran in the sandbox)")
    print(f"env          {args.env}: {len(total)} random-policy transitions (seed {args.seed}), evaluated in "
          f"{seconds * 1000:.1f} ms")
    print(f"inputs       {', '.join(inputs)}")
    stats = term_statistics(total.numpy(), {name: values.numpy() for name, values in terms.items()})
    print("\n" + stats_table(stats))
    return 0


# --------------------------------------------------------------------------------------------------- generate
def task_description(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> TaskDescription:
    """The LLM's description of an env (built with `env_kwargs`), from the env itself: observation size, action
    space, reward spec and (for highway-env) its Kinematics settings after a reset."""
    import gymnasium as gym

    import envs
    from reward_learning.env_descriptions import ActionInfo, ComponentInfo, HighwayObservation, describe_task

    env = envs.make(env_id, render_mode=None, **(env_kwargs or {}))
    try:
        space = env.action_space
        if isinstance(space, gym.spaces.Discrete):
            names = getattr(getattr(env.unwrapped, "action_type", None), "actions", None) or {}
            action = ActionInfo(True, n=int(space.n), labels=tuple(str(names[i]) for i in sorted(names)))
        else:
            action = ActionInfo(False, tuple(space.shape), low=float(np.min(space.low)), high=float(np.max(space.high)))
        components = [ComponentInfo(c.name, c.weight, c.direction, c.description) for c in env.reward_spec]
        highway = None
        observer = getattr(env.unwrapped, "observation_type", None)
        if type(observer).__name__ == "KinematicObservation":
            env.reset(seed=0)  # highway-env fills in its normalisation ranges on the first observation
            ranges = ({k: (float(v[0]), float(v[1])) for k, v in observer.features_range.items()}
                      if observer.normalize else None)
            highway = HighwayObservation(tuple(observer.features), int(observer.vehicles_count),
                                         bool(observer.absolute), ranges)
        size = int(np.prod(env.observation_space.shape))
    finally:
        env.close()
    return describe_task(env_id, size, action, components, highway)


def generation_setup(args: argparse.Namespace, samples: int = 1, env_kwargs: Mapping[str, Any] | None = None
                     ) -> tuple[TaskDescription, Validator, GenerationConfig]:
    """The task description, the sandbox validator (on random-policy transitions) and the generation settings that
    the LLM options of `reward generate` and `reward refine` ask for; `samples`: replies sampled per prompt;
    `env_kwargs`: the env's constructor settings (those of the runs the reward will train)."""
    from reward_learning.llm import SamplingSettings
    from reward_learning.sandbox import SandboxLimits
    from reward_learning.text2reward import GenerationConfig, sandbox_validator

    description = task_description(args.env, env_kwargs)
    transitions, components = sample_transitions(args.env, args.samples, args.seed, env_kwargs)
    sampling = SamplingSettings(temperature=args.temperature, seed=args.seed, n=samples, max_tokens=args.max_tokens)
    config = GenerationConfig(rounds=args.rounds, few_shot=args.few_shot, sampling=sampling,
                              retrieval=args.retrieval)
    validate = sandbox_validator(transitions, components, SandboxLimits(cpu_seconds=args.timeout,
                                                                        wall_seconds=2 * args.timeout))
    return description, validate, config


def default_out(command: str, env_id: str) -> Path:
    """`runs/<command>-<env>-<time>`, where generate and refine write when --out is not given."""
    return Path("runs") / f"{command}-{env_id.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_generate(args: argparse.Namespace) -> int:
    """Ask an LLM for reward code for a goal on an env, validate each reply in the sandbox on random-policy
    transitions, feed errors back for up to --rounds rounds, and save the provenance (and reward.py when valid)."""
    from reward_learning.llm import LLMError, make_client
    from reward_learning.text2reward import generate_reward, stats_table
    from robotrl.refine import print_attempts

    description, validate, config = generation_setup(args, args.n)
    out = Path(args.out) if args.out else default_out("generate", args.env)
    client = make_client(args.llm, args.model, args.cache, use_cache=not args.no_cache)
    try:
        result = generate_reward(client, args.goal, description, validate, config, out_dir=out)
    except LLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        client.close()
    print_attempts(result)
    if result.code is None:
        print(f"no valid reward code after {len(result.attempts)} replies; provenance in {out}", file=sys.stderr)
        return 1
    print(f"reward code  {out / 'reward.py'} (check it: robotrl reward check {out / 'reward.py'} --env {args.env})")
    print()
    print(stats_table(next(a.stats for a in result.attempts if a.error is None)))
    return 0


def cmd_refine(args: argparse.Namespace) -> int:
    """Refine reward code from short training runs (automatic statistics, a person's typed feedback with --human,
    a person's ranking of policy videos with --rank-videos); see `robotrl.refine`."""
    from reward_learning.code_check import RewardCodeError
    from reward_learning.llm import LLMError, make_client
    from robotrl import refine

    if args.code is None and args.rank_videos is None:
        raise ValueError("pass the reward to refine with --code FILE (or let --rank-videos K generate candidates)")
    if args.rank_videos is not None and args.rank_videos < 2:
        raise ValueError(f"--rank-videos needs at least 2 candidates to compare, got {args.rank_videos}")
    if args.code is not None and not Path(args.code).is_file():
        raise FileNotFoundError(f"--code: no reward code file at {args.code}")
    base = refine.base_config(args.env, args.config, args.steps)
    description, validate, config = generation_setup(args, env_kwargs=base.get("env", {}).get("kwargs"))
    code = None
    if args.code is not None:
        try:
            code = refine.initial_code(Path(args.code), description, validate)
        except RewardCodeError as err:
            print(f"rejected: {args.code}: {err}", file=sys.stderr)
            return 1
    out = Path(args.out) if args.out else default_out("refine", args.env)
    trainer = refine.RewardTrainer(base, args.steps, out, progress=sys.stderr.isatty())
    answers = sys.stdin if args.human else None
    client = make_client(args.llm, args.model, args.cache, use_cache=not args.no_cache)
    try:
        if args.rank_videos is None:
            final = refine.refine_automatically(client, args.goal, description, code, trainer, validate,
                                                args.iterations, config, answers)
        else:
            wait = functools.partial(refine.serve_until_labelled, port=args.port)
            final = refine.refine_by_ranking(client, args.goal, description, code, trainer, validate,
                                             args.iterations, args.rank_videos, config, args.video_steps, wait,
                                             answers)
    except LLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        client.close()
    if final is None:
        print(f"no valid refined reward code; everything so far is in {out}", file=sys.stderr)
        return 1
    print(f"refined reward  {final} (iterations, runs and prompts in {out})")
    return 0


def cmd_success_head(args: argparse.Namespace) -> int:
    """Fit a success classifier on labelled frames with the config's VLM and save it."""
    from reward_learning.vlm_success import SuccessClassifier, load_labelled_frames
    from robotrl.vlm_rewards import load_backend

    vlm = load_config(args.config, args.overrides).reward.vlm
    frames, success = load_labelled_frames(args.frames)
    backend = load_backend(vlm)
    head, fit = SuccessClassifier.fit(backend, frames, success, vlm.batch_size, args.holdout, seed=args.seed)
    out = head.save(args.out)
    print(f"fitted on {fit.train_frames} frames ({int(success.sum())} successful of {len(success)} in total): "
          f"train accuracy {fit.train_accuracy:.3f}, held-out accuracy {fit.holdout_accuracy:.3f} on "
          f"{fit.holdout_frames} frames")
    print(f"saved {out}; use it with reward.vlm.success_head={out}")
    return 0


def cmd_vlm_episode(args: argparse.Namespace) -> int:
    """One episode's frames with their VLM and env rewards, drawn to a PNG."""
    from robotrl.cli import find_run
    from robotrl.plotting import plot_reward_along_episode
    from robotrl.policy import load_policy
    from robotrl.vlm_rewards import episode_vlm_rewards

    config = load_config(args.config, args.overrides)
    act = None
    if args.run is not None:
        policy = load_policy(find_run(args.run), device="cpu")
        if policy.config.env.id != config.env.id:
            raise ValueError(f"--run {args.run} acts in {policy.config.env.id}, but {args.config} is for "
                             f"{config.env.id}")
        act = policy.act
    frames, rewards = episode_vlm_rewards(config, act, args.seed, args.max_steps)
    who = f"{args.run}'s policy" if args.run else "random actions"
    out = plot_reward_along_episode(frames, rewards, Path(args.out), args.frames,
                                    title=f"{config.env.id}: VLM reward along one episode of {who}")
    print(f"{len(frames)} steps; VLM reward {rewards['vlm'].min():.4f} .. {rewards['vlm'].max():.4f}; wrote {out}")
    return 0

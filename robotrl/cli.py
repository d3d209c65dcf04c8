"""The `robotrl` command line: train, resume, eval (with videos), plot, envs, config, reward (train/info/export),
label (a web page where people label preference queries)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robotrl.trainer import Trainer

EPILOG = """examples:
  robotrl train configs/pendulum_sac.yaml
  robotrl train configs/halfcheetah_sac.yaml train.total_steps=50000 algo.actor_lr=1e-3 seed=1
  robotrl resume runs/pendulum-sac-20261123-142200
  robotrl eval runs/pendulum-sac-20261123-142200 --episodes 3 --video
  robotrl plot runs/a runs/b --metric eval/return --out curves.png
  robotrl envs
  robotrl reward info runs/pendulum-pebble-20261123-142200
  robotrl reward train --labels runs/pendulum-pebble-20261123-142200/labels.sqlite model.hidden_sizes=[64,64]
  robotrl reward compare --env Reacher-v5 env components:distance=-1 negated:env random
  robotrl label runs/pendulum-pebble-20261123-142200
"""


DEFAULT_RUNS_DIR = Path("runs")


def find_run(spec: str, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    """A run directory from a path, or a run name prefix (newest match) or `latest` looked up in `runs_dir`."""
    path = Path(spec)
    if path.is_dir() and (path / "config.yaml").exists():
        return path
    runs = [p for p in runs_dir.glob("*") if (p / "config.yaml").exists()]
    candidates = sorted(runs, key=lambda p: p.stat().st_mtime)
    if spec != "latest":
        candidates = [p for p in candidates if p.name.startswith(spec)]
    if not candidates:
        raise ValueError(f"no run found for '{spec}' (looked for a run directory {path} and for runs in "
                         f"{runs_dir.resolve()}): pass a run directory, a run name, or latest, and --runs-dir DIR "
                         "for runs outside runs/")
    return candidates[-1]


def cmd_train(args: argparse.Namespace) -> int:
    from robotrl.config import load_config
    from robotrl.trainer import Trainer

    config = load_config(args.config, args.overrides)
    return run_training(Trainer(config, run_dir=args.run_dir, progress=not args.no_progress))


def cmd_resume(args: argparse.Namespace) -> int:
    from robotrl.trainer import Trainer

    run = find_run(args.run, args.runs_dir)
    trainer = Trainer.resume(run, progress=not args.no_progress, overrides=tuple(args.overrides))
    print(f"resuming {run} from step {trainer.step}")
    return run_training(trainer)


def run_training(trainer: Trainer) -> int:
    """Train and print the result; an interrupt once a checkpoint exists says how to continue."""
    from robotrl.trainer import CHECKPOINT

    try:
        result = trainer.train()
    except KeyboardInterrupt as interrupt:  # the trainer checkpoints on its way out
        if not (trainer.run_dir / CHECKPOINT).exists():  # interrupted before the training loop began
            raise
        print(f"interrupted; continue from the last checkpoint with `robotrl resume {trainer.run_dir}`",
              file=sys.stderr)
        return interrupted_exit_code(interrupt)
    print(f"run: {result.run_dir}  steps: {result.steps}  final eval: {_fmt(result.final_eval)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from robotrl.policy import load_policy

    run = find_run(args.run, args.runs_dir)
    policy = load_policy(run, device=args.device)
    video_dir = Path(args.video_dir) / run.name if args.video else None
    result = policy.evaluate(args.episodes, seed=args.seed, video_dir=video_dir, width=args.width,
                             height=args.height, camera=args.camera, deterministic=not args.stochastic)
    print(f"{run.name}: {_fmt(result.summary())} over {args.episodes} episode(s)")
    for path in result.videos:
        print(f"video: {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from robotrl.plotting import DEFAULT_METRICS, plot_runs, reward_metrics

    runs = [find_run(r, args.runs_dir) for r in args.runs]
    out = Path(args.out) if args.out else (runs[0] / "curves.png")
    metrics, extra = (args.metric, []) if args.metric else (list(DEFAULT_METRICS), reward_metrics(runs))
    plot_runs(runs, metrics, out, window=args.smooth, title=args.title, extra=extra)
    print(f"plot: {out}")
    return 0


def cmd_envs(args: argparse.Namespace) -> int:
    import envs

    for env_id in envs.list_envs():
        print(env_id)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from robotrl.config import dump_config, load_config

    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0


def cmd_reward(args: argparse.Namespace) -> int:
    from robotrl import compare_cli, reward_cli

    commands = {"train": reward_cli.cmd_train, "info": reward_cli.cmd_info, "export": reward_cli.cmd_export,
                "queries": reward_cli.cmd_queries, "compare": compare_cli.cmd_compare, "check": reward_cli.cmd_check,
                "generate": reward_cli.cmd_generate, "refine": reward_cli.cmd_refine,
                "success-head": reward_cli.cmd_success_head,
                "vlm-episode": reward_cli.cmd_vlm_episode}
    return commands[args.reward_command](args)


def label_store_path(spec: str) -> Path:
    """The label store file named by `spec`: a .sqlite file, or a run directory holding labels.sqlite."""
    from robotrl.preference import LABEL_STORE

    path = Path(spec)
    if path.is_dir():
        path = path / LABEL_STORE
    if not path.is_file():
        raise FileNotFoundError(f"no label store at {path}: pass a run directory that holds {LABEL_STORE} or the "
                                f".sqlite file itself")
    return path


def cmd_label(args: argparse.Namespace) -> int:
    from reward_learning.label_store import LabelStore
    from robotrl.labelling import serve
    from robotrl.reward_cli import write_export

    path = label_store_path(args.db)
    if not (args.stats or args.export):
        serve(path, args.host, args.port, args.token, width=args.width, height=args.height, camera=args.camera)
        return 0
    with LabelStore.open(path) as store:
        if args.stats:
            print(_annotator_table(store.annotator_summary()))
        if args.export:
            suffix = Path(args.export).suffix.lower()
            if suffix not in (".json", ".csv"):
                raise ValueError(f"--export writes .json or .csv files, got {args.export}")
            write_export(store, suffix[1:], args.export)
    return 0


def _annotator_table(summary: dict) -> str:
    """Per-annotator label counts and pairwise agreement / Cohen's kappa as aligned text tables ('-': no shared
    answers)."""
    import math

    kinds = ("left", "right", "equal", "skip")
    names = sorted(summary["annotators"])
    if not names:
        return "no labels yet"
    width = max(len("annotator"), *map(len, names))
    lines = [f"{'annotator':<{width}}  {'labels':>6}" + "".join(f"  {k:>5}" for k in kinds)]
    for name in names:
        counts = summary["annotators"][name]
        lines.append(f"{name:<{width}}  {counts['labels']:>6}" + "".join(f"  {counts[k]:>5}" for k in kinds))
    if summary["pairs"]:
        pairs = [(f"{p['a']} ~ {p['b']}", p) for p in summary["pairs"]]
        pair_width = max(len("pair"), *(len(label) for label, _ in pairs))
        lines += ["", f"{'pair':<{pair_width}}  {'shared':>6}  {'agreement':>9}  {'kappa':>6}"]
        for label, p in pairs:
            agreement, kappa = ("-" if math.isnan(v) else f"{v:.2f}" for v in (p["agreement"], p["kappa"]))
            lines.append(f"{label:<{pair_width}}  {p['shared']:>6}  {agreement:>9}  {kappa:>6}")
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_runs_dir(p: argparse.ArgumentParser) -> None:
    """The --runs-dir option of commands that look runs up by name or `latest`."""
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, metavar="DIR",
                   help=f"folder where run names and 'latest' are looked up (default: {DEFAULT_RUNS_DIR})")


def _fmt(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.2f}" for k, v in metrics.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robotrl", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Train control policies from YAML configs, evaluate them and render videos.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train from a YAML config", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train from a YAML config. Writes runs/<name>-<time>/ with the resolved config, "
                       "metrics.jsonl, TensorBoard events and checkpoint.pt.",
                       epilog="overrides: dotted keys, e.g. algo.batch_size=128 train.total_steps=2e4 seed=3")
    p.add_argument("config", help="path to a YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides applied before validation")
    p.add_argument("--run-dir", type=Path, default=None, help="write the run here instead of runs/<name>-<time>")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("resume", help="continue a killed or finished run from its last checkpoint",
                       description="Continue a run from checkpoint.pt with its replay buffer, optimisers, RNG states "
                       "and counters. Overrides may extend it, e.g. train.total_steps=200000.")
    p.add_argument("run", help="run directory, run name prefix, or 'latest'")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides (e.g. a larger train.total_steps)")
    p.add_argument("--no-progress", action="store_true")
    _add_runs_dir(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("eval", help="evaluate a trained run, optionally writing mp4 videos",
                       description="Run deterministic evaluation episodes from a run's checkpoint. With --video, "
                       "writes one mp4 per episode under videos/<run>/ (headless, no display needed).")
    p.add_argument("run", help="run directory, run name prefix, or 'latest'")
    p.add_argument("--episodes", type=_positive_int, default=5)
    p.add_argument("--video", action="store_true", help="render episodes to videos/<run>/episode-NNN.mp4")
    p.add_argument("--video-dir", default="videos", help="parent folder for videos (default: videos)")
    p.add_argument("--width", type=_positive_int, default=None, help="video width (default: the run's video.width)")
    p.add_argument("--height", type=_positive_int, default=None,
                   help="video height (default: the run's video.height)")
    p.add_argument("--camera", default=None, help="MuJoCo camera name or id")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic policy")
    p.add_argument("--device", default="auto")
    _add_runs_dir(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plot", help="plot learning curves of one or more runs to a PNG",
                       description="Plot metrics from runs' metrics.jsonl, one line per run. For runs that learn "
                       "their reward from preferences, the default plot adds how good the learned reward is.")
    p.add_argument("runs", nargs="+", help="run directories or names")
    p.add_argument("--metric", nargs="+", default=None,
                   help="metrics to plot, one subplot each (default: eval/return train/episode_return, plus a "
                   "second row with reward/true_pref_accuracy, reward/holdout_accuracy, reward/return_correlation "
                   "and reward/train_accuracy for the ones logged by preference-learning runs)")
    p.add_argument("--out", default=None, help="PNG path (default: <first run>/curves.png)")
    p.add_argument("--smooth", type=int, default=1, help="moving-average window")
    p.add_argument("--title", default=None)
    _add_runs_dir(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("envs", help="list registered environment ids")
    p.set_defaults(func=cmd_envs)

    p = sub.add_parser("config", help="validate a config and print it fully resolved")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_config)

    add_reward_parser(sub)

    p = sub.add_parser("label", help="label preference queries of a label store in a local web page",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Serve a web page where people compare the two segments of each pending query "
                       "(videos rendered\nfrom the stored simulator states) and answer left / right / equal / skip. "
                       "Labels go into the store\nas web:<name>. Binds 127.0.0.1; any other --host requires an "
                       "access token (generated if not given).\nWith --stats or --export it reports on the "
                       "store's labels instead of serving.",
                       epilog="examples:\n  robotrl label runs/x\n  robotrl label runs/x/labels.sqlite --host "
                       "0.0.0.0 --port 8000\n  robotrl label runs/x --stats --export labels.csv")
    p.add_argument("db", metavar="RUN_OR_LABEL_DB", help="run directory holding labels.sqlite, or the .sqlite file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0 picks a free one)")
    p.add_argument("--token", default=None, help="access token to require (default: none on loopback, generated "
                   "otherwise)")
    p.add_argument("--width", type=_positive_int, default=320, help="video width (default: 320)")
    p.add_argument("--height", type=_positive_int, default=240, help="video height (default: 240)")
    p.add_argument("--camera", default=None, help="MuJoCo camera name or id")
    p.add_argument("--stats", action="store_true", help="print per-annotator counts and pairwise agreement, then exit")
    p.add_argument("--export", default=None, metavar="FILE", help="write the labels that count to FILE.json or "
                   "FILE.csv, then exit")
    p.set_defaults(func=cmd_label)
    return parser


def add_reward_parser(sub: argparse._SubParsersAction) -> None:
    """`robotrl reward train|info|export` (implemented in robotrl.reward_cli)."""
    reward = sub.add_parser("reward", help="train, inspect and export learned rewards from a label store",
                            description="Work with a preference label store (a run's labels.sqlite): train a reward "
                            "model from its labels, show its contents, export its queries and labels.")
    commands = reward.add_subparsers(dest="reward_command", required=True, metavar="REWARD_COMMAND")
    reward.set_defaults(func=cmd_reward)

    p = commands.add_parser(
        "train", help="train a reward ensemble from the labels of a store",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a reward ensemble on every labelled pair of a label store (skips are left out), report\n"
        "train and held-out preference accuracy, and save the model (load it with RewardEnsemble.load).\n"
        "The architecture comes from reward.preference.model of --config, else the defaults. Discrete-action\n"
        "envs are recognised by building the env once (the store keeps the action index as one column).",
        epilog="overrides: model.<key>=value, e.g. model.hidden_sizes=[64,64] model.ensemble_size=5\n"
        "example: robotrl reward train --labels runs/x/labels.sqlite --config runs/x --holdout 0.2")
    p.add_argument("--labels", required=True, metavar="DB",
                   help="label store file, or a run directory holding labels.sqlite")
    p.add_argument("--config", default=None, metavar="CFG",
                   help="run config YAML, or a run directory, whose reward.preference.model is used (must be for "
                   "the store's env; default: the RewardModelConfig defaults)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="where to save the model (default: reward_model.pt next to the store, which replaces the "
                   "run's own model when the store is in a run directory)")
    p.add_argument("--epochs", type=_positive_int, default=None, metavar="N",
                   help="maximum training epochs (default: model.max_epochs); training stops early once train "
                   "accuracy exceeds model.target_accuracy")
    p.add_argument("--holdout", type=float, default=0.1, metavar="FRACTION",
                   help="share of queries held out to measure accuracy, in [0, 1) (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and shuffles (default: 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                   help="torch intra-op CPU threads (default: 1; small MLPs train fastest on 1-2)")
    p.add_argument("overrides", nargs="*", help="model.<key>=value overrides of the reward model config")

    p = commands.add_parser("info", help="show a store's task, counts per label kind and labeller, pending queries",
                            description="Print a label store's meta (env, shapes, reward components) and counts: "
                            "steps, segments, queries, labels per kind and per labeller, queries still pending.")
    p.add_argument("db", metavar="DB", help="label store file, or a run directory holding labels.sqlite")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead")

    p = commands.add_parser("export", help="export a store's queries and labels as JSON or CSV",
                            description="Write one row per label (relabels included; 'latest' marks the label that "
                            "counts) and one per pending query: query id, left/right segment refs (segment id, run, "
                            "episode, start, length), label, labeller and UTC timestamp. JSON adds the store's meta.")
    p.add_argument("db", metavar="DB", help="label store file, or a run directory holding labels.sqlite")
    p.add_argument("--format", choices=("json", "csv"), default="json", help="output format (default: json)")
    p.add_argument("--out", default=None, metavar="FILE", help="output file (default or '-': standard output)")

    p = commands.add_parser(
        "queries", help="sample query pairs from saved trajectories into a store, for people to label offline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Cut uniform pairs of segments from a run's replay buffer (when it recorded simulator states),\n"
        "from --rollouts N fresh episodes of a run's policy, or from an offline dataset (.npz with observations,\n"
        "actions, rewards, terminals and states; --env names its task), and store them as unlabelled queries.\n"
        "Then label them in the web page (robotrl label DB) and train on them (robotrl reward train --labels DB).",
        epilog="example: robotrl reward queries runs/x --rollouts 20 --count 100 --out labels/x.sqlite")
    p.add_argument("source", metavar="SOURCE", help="a run directory or a .npz dataset")
    p.add_argument("--out", required=True, metavar="DB", help="label store to create or add to")
    p.add_argument("--count", type=_positive_int, default=50, metavar="N", help="query pairs to add (default: 50)")
    p.add_argument("--segment-length", type=_positive_int, default=50, metavar="L",
                   help="steps per segment (default: 50)")
    p.add_argument("--rollouts", type=_positive_int, default=None, metavar="N",
                   help="roll out the run's policy for N episodes (stochastic) instead of using its replay buffer")
    p.add_argument("--deterministic", action="store_true", help="with --rollouts: deterministic policy actions")
    p.add_argument("--env", default=None, metavar="ENV_ID", help="the task of a .npz dataset")
    p.add_argument("--task", default=None, metavar="TEXT", help="what labellers should prefer (shown in the page)")
    p.add_argument("--seed", type=int, default=0, help="seed of rollouts and segment sampling (default: 0)")

    p = commands.add_parser(
        "compare", help="distances between reward sources (STARC-VAL or EPIC): a table and a heatmap",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Estimate pairwise distances between reward sources on transitions of an env: 0 for rewards that\n"
        "differ only by potential shaping or positive scale (or, for starc_val, S'-redistribution), 1 for R and -R.\n"
        "Prints the distance matrix and writes a heatmap PNG. starc_val fits a value function on the transitions\n"
        "and works for any source; epic evaluates each reward on (2N + M) * M made-up transitions, so it needs\n"
        "rewards of obs/action/next_obs alone (reward models, random), not env or components.\n"
        "SOURCE: env | components | components:name=w,... (signed weights on raw components) | negated:SOURCE |\n"
        "random | PATH.pt (a saved reward model) | vlm:CONFIG.yaml (a config's reward.vlm section) |\n"
        "code:FILE.py (generated reward code, run in the sandbox).",
        epilog="examples:\n  robotrl reward compare --env Reacher-v5 env components:distance=-1 negated:env random\n"
        "  robotrl reward compare --from-run runs/x env runs/x/reward_model.pt --bootstrap 100 --out x.png")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="reward sources to compare (at least two)")
    p.add_argument("--env", default=None, metavar="ENV_ID", help="the task (default with --from-run: the run's)")
    p.add_argument("--method", choices=("starc_val", "epic"), default="starc_val",
                   help="starc_val (default) or epic")
    p.add_argument("--norm", choices=("l1", "l2", "linf"), default="l2",
                   help="starc_val: the norm over the transitions that scales and compares canonical rewards: mean "
                   "|x|, root mean square (default) or max |x|")
    p.add_argument("--samples", type=_positive_int, default=10000, metavar="N",
                   help="transitions to estimate on (default: 10000; a random subset of a larger buffer)")
    p.add_argument("--from-run", default=None, metavar="RUN",
                   help="take transitions from this run's replay buffer (default: a random policy in --env)")
    p.add_argument("--rollouts", type=_positive_int, default=None, metavar="N",
                   help="roll out N whole episodes: of the --from-run run's policy, else of a random policy")
    p.add_argument("--gamma", type=float, default=None, help="discount (default: the run's algo.gamma, else 0.99)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B",
                   help="bootstrap resamples for 95%% intervals (default: 0, none)")
    p.add_argument("--mean-samples", type=_positive_int, default=512, metavar="M",
                   help="epic: coverage samples per expectation (default: 512)")
    p.add_argument("--out", default="reward_compare.png", metavar="PNG",
                   help="heatmap path (default: reward_compare.png)")
    p.add_argument("--seed", type=int, default=0, help="seed of rollouts, subsets and estimators (default: 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--threads", type=_positive_int, default=1, metavar="N", help="torch CPU threads (default: 1)")

    p = commands.add_parser(
        "check", help="check a file of LLM-written reward code in the sandbox on transitions of an env",
        description="Check reward code (compute_dense_reward(obs, action, next_obs, **named); see "
        "reward_learning.sandbox) statically, run it in the sandbox on random-policy transitions of --env, and print "
        "mean/std/min/max of the reward and of each named term, or why it was rejected (exit status 1).",
        epilog="example: robotrl reward check reward.py --env Pendulum-v1 --samples 2000")
    p.add_argument("file", metavar="FILE", help="Python file defining compute_dense_reward")
    p.add_argument("--env", required=True, metavar="ENV_ID", help="the task to sample transitions from")
    p.add_argument("--samples", type=_positive_int, default=1000, metavar="N",
                   help="random-policy transitions to evaluate on (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rollouts (default: 0)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="CPU-time limit of the evaluation (wall clock: twice that; default: 5)")

    p = commands.add_parser(
        "success-head", help="fit a VLM success classifier (reward.vlm.success_head) on labelled frames",
        description="Embed labelled frames with the VLM of CONFIG's reward.vlm section and fit a logistic head on the "
        "embeddings (RoboFuME-style success detection with the model frozen); report train and held-out accuracy "
        "and save the head for reward.vlm.success_head, whose P(success | frame) then becomes the reward.",
        epilog="example: robotrl reward success-head frames.npz --config configs/mountaincar_vlm.yaml "
        "--out head.pt reward.vlm.model_path=/models/clip")
    p.add_argument("frames", metavar="FRAMES.npz", help="arrays 'frames' (uint8 [N, H, W, 3]) and 'success' ([N] 0/1)")
    p.add_argument("--config", required=True, help="a run config whose reward.vlm section names the model")
    p.add_argument("--out", required=True, help="where to save the head (.pt)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of frames kept out to measure accuracy "
                   "(default: 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the holdout split (default: 0)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the config, e.g. reward.vlm.model_path=DIR")

    p = commands.add_parser(
        "vlm-episode", help="plot a VLM reward along one episode under its frames",
        description="Roll out one episode in CONFIG's env (a run's policy with --run, else random actions), score "
        "every frame with the config's VLM reward, and draw the VLM and env rewards under a strip of frames.",
        epilog="example: robotrl reward vlm-episode configs/humanoid_kneeling_vlm.yaml --run latest --out kneel.png "
        "reward.vlm.model_path=/models/clip")
    p.add_argument("config", metavar="CONFIG", help="a config with a reward.vlm section")
    p.add_argument("--run", help="act with this run's policy (deterministic) instead of random actions")
    p.add_argument("--out", default="vlm_episode.png", help="PNG to write (default: vlm_episode.png)")
    p.add_argument("--frames", type=_positive_int, default=8, help="frames shown above the curve (default: 8)")
    p.add_argument("--max-steps", type=_positive_int, default=None, help="stop the episode early")
    p.add_argument("--seed", type=int, default=0, help="episode seed (default: 0)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the config, e.g. reward.vlm.model_path=DIR")

    p = commands.add_parser(
        "generate", help="write reward code for a goal with an LLM, validated in the sandbox",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Ask an LLM (Text2Reward-style prompt: the env's observation fields, action and reward\n"
        "components) for compute_dense_reward code that makes the agent fulfil GOAL, validate each reply (static\n"
        "check, then the sandbox on random-policy transitions of --env), send errors back for up to --rounds\n"
        "rounds, and save every prompt, reply and error under --out, with reward.py when one is valid. Replies are\n"
        "cached by request (default ~/.cache/robotrl/llm), so a rerun with the same settings needs no LLM.",
        epilog="examples:\n  robotrl reward generate --env HalfCheetah-v5 \"run backwards as fast as possible\"\n"
        "  robotrl reward generate --env metaworld/reach-v3 \"reach the goal\" --llm http://127.0.0.1:8000 "
        "--model qwen2.5-coder --few-shot 2")
    add_llm_options(p)
    p.add_argument("--out", metavar="DIR", help="where to write the provenance (default: runs/generate-ENV-TIME)")
    p.add_argument("--n", type=_positive_int, default=1, metavar="N",
                   help="independent samples, seeds SEED..SEED+N-1 (default: 1)")

    p = commands.add_parser(
        "refine", help="refine reward code from short training runs, typed feedback or a ranking of policy videos",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Refine LLM-written reward code (Text2Reward / Eureka / ICPL). Each iteration trains a policy on\n"
        "the current reward for --steps steps, then sends the code's per-term statistics over the run's replay\n"
        "buffer, the env's own evaluation return and the success rate (where the env has one) back to the LLM,\n"
        "which writes an improved reward (validated like `reward generate`). With --human you read the\n"
        "statistics and type a line for the LLM (Enter: statistics only; q: stop). With --rank-videos K each\n"
        "iteration trains K candidate rewards instead, serves videos of their policies on a local labelling\n"
        "page and asks you to compare them in pairs; the best candidate, with your preference, seeds the next\n"
        "round. Every iteration's code, run directory, prompts, replies and feedback are kept under --out.",
        epilog="examples:\n  robotrl reward refine --env Pendulum-v1 \"keep the pendulum upright\" --code reward.py "
        "--llm http://127.0.0.1:8000 --model qwen2.5-coder\n  robotrl reward refine --env Hopper-v5 \"hop forward\" "
        "--rank-videos 3 --iterations 2 --steps 50000 --llm http://127.0.0.1:8000 --model qwen2.5-coder")
    add_llm_options(p)
    p.add_argument("--code", metavar="FILE", help="the reward code to refine (optional with --rank-videos: then "
                   "the first candidates are generated, and FILE, if given, is one of them)")
    p.add_argument("--iterations", type=_positive_int, default=3, metavar="N",
                   help="refinement iterations (ranking rounds with --rank-videos) (default: 3)")
    p.add_argument("--steps", type=_positive_int, default=20_000, metavar="S",
                   help="env steps of each training run (train.total_steps) (default: 20000)")
    p.add_argument("--config", metavar="YAML", help="run config the training runs start from (off-policy algo, "
                   "same env; default: a short SAC run)")
    p.add_argument("--human", action="store_true", help="show each iteration's statistics and ask for feedback "
                   "on the terminal")
    p.add_argument("--rank-videos", type=int, default=None, metavar="K",
                   help="train K candidate rewards per iteration and rank their policies' videos in the browser")
    p.add_argument("--video-steps", type=_positive_int, default=100, metavar="N",
                   help="steps of each policy's episode shown in the videos (default: 100)")
    p.add_argument("--port", type=int, default=0, help="port of the labelling page on 127.0.0.1 (default: any free)")
    p.add_argument("--out", metavar="DIR", help="where to write iterations, runs and results (default: "
                   "runs/refine-ENV-TIME)")


def add_llm_options(p: argparse.ArgumentParser) -> None:
    """The goal, env and LLM options that `reward generate` and `reward refine` share."""
    p.add_argument("goal", metavar="GOAL", help="what the agent should do, in words")
    p.add_argument("--env", required=True, metavar="ENV_ID", help="the task the reward is for")
    p.add_argument("--llm", default="local", metavar="local|URL",
                   help="'local': SmolLM2-135M embedded with xllamacpp (needs the llm extra); or the base URL of an "
                   "OpenAI-compatible server (API key from $OPENAI_API_KEY if set). Default: local")
    p.add_argument("--model", metavar="M", help="model name for a URL; for local, a GGUF file (default: SmolLM2)")
    p.add_argument("--few-shot", type=int, default=0, metavar="K",
                   help="examples from reward_learning/reward_library in the prompt, by goal similarity (default: 0)")
    p.add_argument("--retrieval", choices=("auto", "minilm", "tfidf"), default="auto",
                   help="how examples are retrieved: MiniLM embeddings (auto: when installed) or TF-IDF")
    p.add_argument("--rounds", type=int, default=3, metavar="N",
                   help="error-feedback rounds after a sample's first reply (default: 3)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default: 0.7)")
    p.add_argument("--max-tokens", type=_positive_int, default=1024, metavar="N",
                   help="longest reply in tokens (default: 1024)")
    p.add_argument("--seed", type=int, default=0, help="seed of the LLM samples and of the rollouts (default: 0)")
    p.add_argument("--samples", type=_positive_int, default=500, metavar="N",
                   help="random-policy transitions to validate on (default: 500)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="CPU-time limit of one validation in the sandbox (default: 5)")
    p.add_argument("--cache", metavar="DIR", help="reply cache directory (default: ~/.cache/robotrl/llm)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the reply cache")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also come after options (`train cfg.yaml --no-progress seed=1`)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except KeyboardInterrupt as interrupt:
        print("interrupted", file=sys.stderr)
        return interrupted_exit_code(interrupt)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError, FloatingPointError) as err:
        code = error_exit_code(err)
        if code is None:  # a bug: keep its traceback
            raise
        print(f"error: {err}", file=sys.stderr)
        return code


def error_exit_code(err: Exception) -> int | None:
    """The exit status of an error the user can act on: 3 when training diverged (NaN/inf), 2 for a bad config,
    file, checkpoint, model or a missing optional package; None for anything else (a bug)."""
    from reward_learning import LLMError, VLMWeightsError
    from robotrl.core.checkpoint import CheckpointError
    from robotrl.trainer import TrainingDiverged

    if isinstance(err, TrainingDiverged | FloatingPointError):
        return 3
    if isinstance(err, ValueError | FileNotFoundError | CheckpointError | LLMError | VLMWeightsError):
        return 2
    if isinstance(err, ModuleNotFoundError) or isinstance(err.__context__, ModuleNotFoundError):
        return 2  # e.g. logging.wandb set without wandb installed
    return None


def interrupted_exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal, as a shell reports it: 143 for SIGTERM, 130 for Ctrl-C.

    The trainer raises the signals it handles (SIGTERM, and those held back during a feedback round) as interrupts
    carrying the signal number (`signum`); any other interrupt is Ctrl-C.
    """
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())

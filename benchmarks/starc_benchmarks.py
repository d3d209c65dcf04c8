"""STARC benchmarks: how well reward distances predict regret on random MDPs, whether sample-based distances rank
perturbed Reacher rewards correctly, and how long one sample-based distance takes.

    # (a) the STARC paper's interpolation experiment at reduced scale (paper: 128 MDPs)
    python benchmarks/starc_benchmarks.py random-mdps --mdps 32 --out benchmarks/results/starc_random_mdps.json

    # (b) Reacher-v5: the true reward against shaped, S'-redistributed, scaled, negated and random rewards
    python benchmarks/starc_benchmarks.py reacher --samples 10000 --seeds 3 --out benchmarks/results/starc_reacher.json

    # (c) seconds for one sample-based distance matrix at 10k and 100k transitions, one CPU thread
    python benchmarks/starc_benchmarks.py timing --samples 10000 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reward_learning import comparison as tab
from reward_learning.comparison_sampled import RewardFn, compare_rewards
from reward_learning.sources import Transitions

RESULTS = Path(__file__).resolve().parent / "results"


def command_line() -> str:
    """The command that produced this output, as a user would type it."""
    return "python " + shlex.join(sys.argv)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": command_line(), **data}, indent=1) + "\n")
    print(f"\nwrote {path}")


# --------------------------------------------------------------------------------------------- (a) random MDPs
def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties sharing their mean rank (for Spearman's ρ; many regrets are exactly 0)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def correlations(distances: np.ndarray, regrets: np.ndarray) -> tuple[float, float]:
    """(Pearson r, Spearman ρ) of distances against regrets."""
    pearson = float(np.corrcoef(distances, regrets)[0, 1])
    return pearson, float(np.corrcoef(average_ranks(distances), average_ranks(regrets))[0, 1])


def canonical_forms(reward: np.ndarray, mdp: tab.TabularMDP) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """{"canon/" or "canon/w": (c(R), the norm's weights)}: "w" is the transition-weighted norm, for which only the
    minimal canonicalisation changes (it minimises the weighted L2 norm)."""
    weights = tab.transition_weights(mdp)
    forms = {}
    for canon in tab.CANONICALIZATIONS:
        plain = tab.canonicalize(reward, mdp, canon)
        forms[f"{canon}/"] = (plain, None)
        forms[f"{canon}/w"] = (tab.canonicalize(reward, mdp, canon, weights=weights) if canon == "minimal" else plain,
                               weights)
    return forms


def reference_forms(reward: np.ndarray, mdp: tab.TabularMDP) -> dict[str, np.ndarray]:
    """Per metric, what distances to `reward` start from: its EPIC/DARD canonical reward for the Pearson distances,
    its standardised canonical reward for the norm distances."""
    forms = canonical_forms(reward, mdp)
    reference = {f"{c}/pearson": forms[f"{c}/"][0] for c in ("epic", "dard")}
    for key, (canonical, weights) in forms.items():
        reference.update({f"{key}{norm}": tab.standardize(canonical, norm, weights) for norm in tab.NORMS})
    return reference


def distances_to(reference: dict[str, np.ndarray], reward: np.ndarray, mdp: tab.TabularMDP) -> dict[str, float]:
    """Every metric's distance from the reward with these `reference_forms` to `reward`."""
    forms = canonical_forms(reward, mdp)
    out = {f"{c}/pearson": tab.pearson_distance(reference[f"{c}/pearson"], forms[f"{c}/"][0],
                                                tab.transition_weights(mdp)) for c in ("epic", "dard")}
    for key, (canonical, weights) in forms.items():
        for norm in tab.NORMS:
            standardized = tab.standardize(canonical, norm, weights)
            out[f"{key}{norm}"] = 0.5 * tab.reward_norm(reference[f"{key}{norm}"] - standardized, norm, weights)
    return out


def cmd_random_mdps(args: argparse.Namespace) -> None:
    """Interpolate R_t = (1 − t)R1 + tR2, t = k/steps (k = 1..steps), and correlate each metric's d(R1, R_t) with
    the normalised regret under R1 of R_t's optimal policy (value iteration), over all MDPs, pairs and steps."""
    rng = np.random.default_rng(args.seed)
    distances: dict[str, list[float]] = {}
    regrets: list[float] = []
    started = time.perf_counter()
    for _ in range(args.mdps):
        mdp = tab.random_mdp(rng, args.states, args.actions, args.gamma)
        for _ in range(args.pairs):
            r1, r2 = (tab.random_reward(rng, args.states, args.actions, rng.choice(tab.REWARD_KINDS))
                      for _ in range(2))
            reference = reference_forms(r1, mdp)
            for k in range(1, args.steps + 1):
                reward = (1 - k / args.steps) * r1 + k / args.steps * r2
                regrets.append(tab.normalized_regret(r1, tab.optimal_policy(reward, mdp), mdp))
                for name, value in distances_to(reference, reward, mdp).items():
                    distances.setdefault(name, []).append(value)
    seconds = time.perf_counter() - started
    regret_array = np.array(regrets)
    rows = []
    for name, values in distances.items():
        pearson, spearman = correlations(np.array(values), regret_array)
        canon, norm = name.split("/")
        rows.append({"metric": name, "canonicalization": canon, "norm": norm, "pearson": pearson,
                     "spearman": spearman})
    rows.sort(key=lambda row: -row["pearson"])
    print(f"{args.mdps} random MDPs x {args.pairs} reward pairs x {args.steps} interpolation steps = "
          f"{len(regrets)} points (|S| = {args.states}, |A| = {args.actions}, gamma = {args.gamma}), "
          f"{seconds:.0f} s\n")
    print("| canonicalisation | norm (w = transition-weighted) | Pearson r with regret | Spearman rho |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['canonicalization']} | {row['norm']} | {row['pearson']:.3f} | {row['spearman']:.3f} |")
    write_json(Path(args.out), {"config": {k: v for k, v in vars(args).items() if k not in ("func", "out")},
                                "points": len(regrets), "mean_regret": float(regret_array.mean()),
                                "seconds": seconds, "metrics": rows})


# --------------------------------------------------------------------------------------------------- (b) Reacher
REACHER_GAMMA = 0.99


def reacher_reward(batch: Transitions) -> torch.Tensor:
    """Reacher-v5's reward as a function of (obs, action, next_obs): −‖fingertip − target‖ after the step (next_obs
    entries 8:10) − ‖a‖². Equals the env reward on real transitions (checked in `cmd_reacher`); EPIC needs it as a
    function because it evaluates rewards on transitions that never happened."""
    return -batch["next_obs"][:, 8:10].norm(dim=1) - batch["action"].pow(2).sum(1)


def reacher_potential(obs: torch.Tensor) -> torch.Tensor:
    """An arbitrary smooth potential: 5·distance + cos q1·cos q2 + 0.1·(joint-1 velocity)."""
    return 5 * obs[:, 8:10].norm(dim=1) + obs[:, 0] * obs[:, 1] + 0.1 * obs[:, 6]


def reacher_sources() -> dict[str, RewardFn]:
    """The true reward and its perturbations.

    shaped: R + γΦ(s') − Φ(s). redistributed: R + 5·‖target(s') − target(s)‖·(1 + |joint-1 velocity(s)|). Reacher
    is deterministic, so S'-redistribution can only change rewards at next states that cannot follow (s, a); the
    target never moves within an episode, so this term is 0 on every possible transition (E_{S'~τ(s,a)} unchanged),
    yet it is large on the made-up transitions EPIC evaluates. scaled: 3R. negated: −R. random: a fixed random
    network of (obs, action).
    """
    from robotrl.compare_cli import RandomReward

    def shaped(batch: Transitions) -> torch.Tensor:
        return (reacher_reward(batch) + REACHER_GAMMA * reacher_potential(batch["next_obs"])
                - reacher_potential(batch["obs"]))

    def redistributed(batch: Transitions) -> torch.Tensor:
        moved = (batch["next_obs"][:, 4:6] - batch["obs"][:, 4:6]).norm(dim=1)
        return reacher_reward(batch) + 5 * moved * (1 + batch["obs"][:, 6].abs())

    return {"true": reacher_reward, "shaped": shaped, "redistributed": redistributed,
            "scaled x3": lambda batch: 3 * reacher_reward(batch), "negated": lambda batch: -reacher_reward(batch),
            "random": RandomReward(10, 2, seed=0)}


def reacher_transitions(samples: int, seed: int) -> dict[str, torch.Tensor]:
    from robotrl.compare_cli import buffer_transitions, random_policy_buffer

    return buffer_transitions(random_policy_buffer("Reacher-v5", samples, None, seed), samples, seed)


def cmd_reacher(args: argparse.Namespace) -> None:
    """Distances from the true Reacher reward to its perturbations, STARC-VAL and EPIC, on random-policy data."""
    torch.set_num_threads(args.threads)
    sources = reacher_sources()
    results: dict[str, dict[str, list]] = {m: {"distance": [], "lower": [], "upper": []} for m in ("starc_val", "epic")}
    started = time.perf_counter()
    for seed in range(args.seeds):
        transitions = reacher_transitions(args.samples, seed)
        mismatch = float((reacher_reward(transitions) - transitions["env_reward"]).abs().max())
        if mismatch > 1e-4:
            raise RuntimeError(f"reacher_reward differs from the env reward by {mismatch}")
        for method in ("starc_val", "epic"):
            comparison = compare_rewards(sources, transitions, method, REACHER_GAMMA, bootstrap=args.bootstrap,
                                         device="cpu", seed=seed, n_mean_samples=args.mean_samples)
            for key in ("distance", "lower", "upper"):
                matrix = getattr(comparison, "distances" if key == "distance" else key)
                results[method][key].append(None if matrix is None else matrix[0, 1:].tolist())
    seconds = time.perf_counter() - started
    names = list(sources)[1:]
    print(f"Reacher-v5, {args.samples} random-policy transitions x {args.seeds} seeds, gamma {REACHER_GAMMA}, "
          f"{args.bootstrap} bootstrap resamples, EPIC with {args.mean_samples} coverage samples; {seconds:.0f} s\n")
    print("| reward vs true | STARC-VAL mean ± sd over seeds | 95% CI (seed 0) | EPIC mean ± sd | 95% CI (seed 0) |")
    print("|---|---|---|---|---|")
    summary = {}
    for i, name in enumerate(names):
        cells, summary[name] = [], {}
        for method in ("starc_val", "epic"):
            values = [row[i] for row in results[method]["distance"]]
            mean, sd = float(np.mean(values)), float(np.std(values))
            lower, upper = results[method]["lower"][0], results[method]["upper"][0]
            ci = f"[{lower[i]:.3f}, {upper[i]:.3f}]" if lower is not None else "-"
            cells += [f"{mean:.3f} ± {sd:.3f}", ci]
            summary[name][method] = {"mean": mean, "sd": sd, "per_seed": values}
        print(f"| {name} | " + " | ".join(cells) + " |")
    ordered = {}
    print()
    for method in ("starc_val", "epic"):
        mean = {name: summary[name][method]["mean"] for name in names}
        close, far = max(mean["shaped"], mean["redistributed"]), min(mean["negated"], mean["random"])
        ordered[method] = close < far
        print(f"{method}: shaped/redistributed closest and negated/random farthest: {close < far} "
              f"(max close {close:.3f} < min far {far:.3f})")
    write_json(Path(args.out), {"config": {k: v for k, v in vars(args).items() if k not in ("func", "out")},
                                "gamma": REACHER_GAMMA, "seconds": seconds, "summary": summary,
                                "ranking_correct": ordered, "raw": results})


# ---------------------------------------------------------------------------------------------------- (c) timing
def cmd_timing(args: argparse.Namespace) -> None:
    """Median seconds of `compare_rewards` for two analytic Reacher rewards (true, shaped), one CPU thread."""
    torch.set_num_threads(1)
    sources = {k: v for k, v in reacher_sources().items() if k in ("true", "shaped")}
    rows = []
    for samples in args.samples:
        transitions = reacher_transitions(samples, seed=0)
        for method in ("starc_val", "epic"):
            times = []
            for repeat in range(args.repeats):
                started = time.perf_counter()
                compare_rewards(sources, transitions, method, REACHER_GAMMA, device="cpu", seed=repeat,
                                n_mean_samples=args.mean_samples)
                times.append(time.perf_counter() - started)
            rows.append({"method": method, "samples": samples, "median_seconds": statistics.median(times),
                         "seconds": times})
    print(f"one distance matrix (2 sources: Reacher true + shaped), CPU, 1 thread, median of {args.repeats}; "
          f"EPIC with {args.mean_samples} coverage samples\n")
    print("| method | transitions | median seconds |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['samples']} | {row['median_seconds']:.2f} |")
    if args.out:
        write_json(Path(args.out), {"rows": rows, "torch": torch.__version__})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("random-mdps", help="correlation of each metric with regret on random MDPs")
    p.add_argument("--mdps", type=int, default=32)
    p.add_argument("--states", type=int, default=32)
    p.add_argument("--actions", type=int, default=4)
    p.add_argument("--gamma", type=float, default=0.95)
    p.add_argument("--pairs", type=int, default=8, help="reward pairs per MDP")
    p.add_argument("--steps", type=int, default=16, help="interpolation steps per pair")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "starc_random_mdps.json"))
    p.set_defaults(func=cmd_random_mdps)
    p = sub.add_parser("reacher", help="rank perturbed Reacher rewards by sample-based STARC-VAL and EPIC")
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--seeds", type=int, default=3, help="independent datasets")
    p.add_argument("--bootstrap", type=int, default=100)
    p.add_argument("--mean-samples", type=int, default=512, help="EPIC coverage samples")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "starc_reacher.json"))
    p.set_defaults(func=cmd_reacher)
    p = sub.add_parser("timing", help="seconds per sample-based distance")
    p.add_argument("--samples", type=int, nargs="+", default=[10000, 100000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mean-samples", type=int, default=512, help="EPIC coverage samples")
    p.add_argument("--out", default=None, help="optional JSON file")
    p.set_defaults(func=cmd_timing)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()

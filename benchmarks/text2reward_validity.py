"""How often LLM-written reward code is usable: for 22 goals over HalfCheetah, Hopper, Meta-World and highway, the share
of generations whose first reply passes validation (static check + sandbox run on random-policy transitions, constant
rewards rejected), the share valid after the error-feedback loop (up to `--rounds` rounds), the error kinds met, and
the wall-clock time per generation (LLM replies + validation). The model is whatever `--llm` names; the default is the
embedded SmolLM2-135M (xllamacpp, one thread). Replies are generated fresh (a new cache directory per run unless
`--cache` is given) and are counted exactly as they come: nothing is fixed by hand.

Prints a markdown table and writes JSON to benchmarks/results/text2reward_validity.json; every prompt, reply and
error is kept under `--out`.

    nice -n 5 python benchmarks/text2reward_validity.py --rounds 3 --max-tokens 384
    nice -n 5 python benchmarks/text2reward_validity.py --rounds 3 --max-tokens 384 --few-shot 2 \
        --results benchmarks/results/text2reward_validity_fewshot2.json
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import tempfile
import time
from pathlib import Path

from reward_learning.llm import SamplingSettings, make_client
from reward_learning.text2reward import GenerationConfig, generate_reward, sandbox_validator
from robotrl.reward_cli import sample_transitions, task_description

RESULTS = Path(__file__).resolve().parent / "results" / "text2reward_validity.json"
GOALS = {
    "HalfCheetah-v5": ["run forward as fast as possible", "run backwards as fast as possible",
                       "run forward at a steady 3 m/s", "flip over onto its back",
                       "stand still and keep the body level", "run forward while using as little energy as possible"],
    "Hopper-v5": ["hop forward as fast as possible without falling", "jump as high as possible in place",
                  "hop backwards without falling", "stand still upright and balanced",
                  "hop forward while keeping the torso upright"],
    "metaworld/reach-v3": ["move the gripper to the goal position", "reach the goal while keeping the gripper open",
                           "move the gripper to the goal slowly and smoothly"],
    "metaworld/pick-place-v3": ["pick up the puck and place it at the goal", "grasp the object and lift it up",
                                "push the object towards the goal without lifting it"],
    "highway/highway-fast-v0": ["drive as fast as possible without crashing", "keep to the rightmost lane and avoid "
                                "collisions", "drive slowly and safely, keeping a large distance to other cars",
                                "overtake the cars ahead without crashing", "avoid changing lanes and never crash"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", default="local")
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--few-shot", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=500, help="random-policy transitions per env")
    parser.add_argument("--cache", default=None, help="reply cache (default: a fresh temporary directory)")
    parser.add_argument("--out", default=None, help="provenance directory (default: runs/bench-text2reward-TIME)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N goals (for a quick look)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"JSON output (default: {RESULTS})")
    args = parser.parse_args()

    out = Path(args.out or f"runs/bench-text2reward-{time.strftime('%Y%m%d-%H%M%S')}")
    cache = args.cache or tempfile.mkdtemp(prefix="t2r-cache-")
    client = make_client(args.llm, args.model, cache)
    config = GenerationConfig(rounds=args.rounds, few_shot=args.few_shot, retrieval="auto",
                              sampling=SamplingSettings(args.temperature, args.seed, 1, args.max_tokens))
    goals = [(env_id, goal) for env_id, texts in GOALS.items() for goal in texts][:args.limit]
    rows = []
    try:
        for env_id in dict.fromkeys(env_id for env_id, _ in goals):
            description = task_description(env_id)
            transitions, components = sample_transitions(env_id, args.samples, args.seed)
            validate = sandbox_validator(transitions, components)
            for goal in [g for e, g in goals if e == env_id]:
                started = time.perf_counter()
                result = generate_reward(client, goal, description, validate, config,
                                         out_dir=out / f"{len(rows):02d}-{env_id.replace('/', '_')}")
                seconds = time.perf_counter() - started
                valid_round = next((a.round for a in result.attempts if a.error is None), None)
                rows.append({"env": env_id, "goal": goal, "first_valid": result.first_attempt_valid(),
                             "valid": result.valid, "valid_round": valid_round, "replies": len(result.attempts),
                             "errors": [a.error_kind for a in result.attempts if a.error is not None],
                             "seconds": round(seconds, 2), "reply_seconds": [round(a.seconds, 2)
                                                                             for a in result.attempts]})
                print(f"{env_id:<26} {'valid' if result.valid else 'invalid':<7} round {valid_round} "
                      f"replies {len(result.attempts)} {seconds:6.1f} s  {goal}", flush=True)
    finally:
        client.close()
    report(rows, args, client.describe(), out)


def report(rows: list[dict], args: argparse.Namespace, llm: dict, out: Path) -> None:
    """Print the markdown table and write the JSON results."""
    n = len(rows)
    first = sum(r["first_valid"] for r in rows)
    final = sum(r["valid"] for r in rows)
    kinds = collections.Counter(kind for r in rows for kind in r["errors"])
    per_env = {}
    for env_id in dict.fromkeys(r["env"] for r in rows):
        mine = [r for r in rows if r["env"] == env_id]
        per_env[env_id] = {"goals": len(mine), "first_valid": sum(r["first_valid"] for r in mine),
                           "valid_after_loop": sum(r["valid"] for r in mine)}
    seconds = sorted(r["seconds"] for r in rows)
    replies = [s for r in rows for s in r["reply_seconds"]]
    summary = {"goals": n, "first_attempt_valid": first, "valid_after_loop": final, "rounds": args.rounds,
               "few_shot": args.few_shot, "max_tokens": args.max_tokens, "temperature": args.temperature,
               "seed": args.seed, "error_kinds": dict(kinds), "per_env": per_env,
               "seconds_per_generation_median": seconds[n // 2] if n else None,
               "seconds_per_generation_mean": sum(seconds) / n if n else None,
               "seconds_per_reply_mean": sum(replies) / len(replies) if replies else None,
               "llm": llm, "machine": platform.processor() or platform.machine(), "provenance": str(out),
               "rows": rows}
    print(f"\n| env | goals | valid at first reply | valid after <= {args.rounds} feedback rounds |")
    print("|---|---|---|---|")
    for env_id, s in per_env.items():
        print(f"| {env_id} | {s['goals']} | {s['first_valid']} | {s['valid_after_loop']} |")
    print(f"| **all** | {n} | {first} ({first / max(n, 1):.0%}) | {final} ({final / max(n, 1):.0%}) |")
    print(f"\nerror kinds over all rejected replies: {dict(kinds)}")
    print(f"seconds per generation: median {summary['seconds_per_generation_median']}, mean "
          f"{summary['seconds_per_generation_mean']:.1f}; per reply (LLM + validation): mean "
          f"{summary['seconds_per_reply_mean']:.1f}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()

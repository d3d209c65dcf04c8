"""Typed run configs: YAML files validated into pydantic schemas, with `key.sub=value` command-line overrides.

Every error a user can make (unknown key, wrong type, bad value, malformed override) raises `ConfigError`, whose
message names the file and the dotted key, and suggests close matches for misspelt keys.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from reward_learning.heron import HeronConfig, HeronTeacher
from reward_learning.models import RewardModelConfig
from reward_learning.preferences import SURFConfig
from robotrl.agents import AGENT_CONFIGS, SACConfig

AlgoConfig = Annotated[Union[tuple(AGENT_CONFIGS.values())], Field(discriminator="name")]  # noqa: UP007 (runtime tuple)


class ConfigError(ValueError):
    """A config file or override the user can fix; the message says where and what."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_bool(value: Any) -> Any:
    """Reject true/false where a number is expected (pydantic would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
"""An int field that refuses booleans (`train.total_steps: true` is a mistake, not 1 step)."""

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _check_device(spec: str) -> str:
    """Accept the device names `resolve_device` understands, so a typo fails when the config is read."""
    if not DEVICE_PATTERN.fullmatch(spec.strip().lower()):
        raise ValueError("must be auto, cpu, cuda, cuda:N (N: a GPU index, e.g. cuda:0) or mps")
    return spec


Device = Annotated[str, AfterValidator(_check_device)]


def known_teachers() -> list[str]:
    """The names reward.preference.teacher accepts: B-Pref's presets, heron, vlm and human."""
    from reward_learning.teachers import TEACHER_PRESETS
    from reward_learning.vlm_teacher import VLMTeacher
    from robotrl.preference import HUMAN  # imported here: robotrl.preference imports this module

    return [*TEACHER_PRESETS, HeronTeacher.name, VLMTeacher.name, HUMAN]


class EnvConfig(Strict):
    id: str = Field(description="environment id, see `robotrl envs`")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to the environment constructor")
    num_envs: Int = Field(1, gt=0)
    vectorization: Literal["sync", "async"] = "sync"
    max_episode_steps: Int | None = Field(None, gt=0)


class TrainConfig(Strict):
    total_steps: Int = Field(100_000, gt=0, description="env steps (summed over parallel envs); on-policy runs "
                             "finish the rollout that crosses it")
    eval_every: Int = Field(10_000, ge=0, description="env steps between evaluations; 0 = only at the end")
    eval_episodes: Int = Field(5, gt=0)
    checkpoint_every: Int = Field(10_000, gt=0)
    log_every: Int = Field(1_000, gt=0)
    torch_threads: Int | None = Field(1, gt=0, description="intra-op threads; small MLPs are fastest on 1-2")
    save_buffer: bool = Field(True, description="store the replay buffer in checkpoints (exact resume)")


class PreferenceConfig(Strict):
    """Preference-based reward learning (PEBBLE for SAC/TD3, PrefPPO for PPO); defaults follow B-Pref."""

    teacher: str = Field("oracle", description="B-Pref preset (oracle, noisy, mistake, skip, myopic, equal), "
                         "heron: HERON's ranking of reward components (see `heron`), human: people label in "
                         "the web page (`robotrl label RUN`), or vlm: the reward.vlm model compares the segments' "
                         "frames (teacher_options frames, margin)")
    human_timeout: float = Field(600.0, gt=0, description="teacher human: seconds a round waits for its labels "
                                 "before it trains on what it has and goes on")
    task_description: str | None = Field(None, description="what the labeller should prefer (shown in the web page)")
    record_states: bool = Field(False, description="store simulator states with segments so they can be shown as "
                                "video later (always on for teachers human and vlm)")
    teacher_options: dict[str, float] = Field(default_factory=dict, description="override preset knobs: beta, "
                                              "gamma, eps_mistake, eps_skip, eps_equal")
    teacher_weights: dict[str, float] | None = Field(None, description="the teacher judges this weighted sum of "
                                                     "reward components; null = the env reward")
    threshold_quirk: bool = Field(False, description="reproduce B-Pref's eps^2 threshold scaling")
    budget: Int = Field(1000, gt=0, description="total queries asked (skips count, as in B-Pref)")
    queries_per_round: Int = Field(100, gt=0)
    schedule: Literal["constant", "linear_decay"] = "constant"
    sampler: Literal["uniform", "disagreement", "entropy", "kcenter", "kcenter_disagreement",
                     "kcenter_entropy"] = "disagreement"
    candidate_factor: Int = Field(10, ge=1, description="candidates per query for active samplers (large_batch)")
    segment_length: Int = Field(50, gt=0)
    query_every: Int = Field(20000, gt=0, description="env steps between feedback rounds (num_interact)")
    unsup_steps: Int = Field(9000, ge=0, description="state-entropy pre-training steps after learning_starts")
    entropy_k: Int = Field(5, ge=1)
    reset_critic: bool = True
    reset_updates: Int = Field(100, ge=0, description="agent updates right after the critic reset")
    holdout_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="share of labels kept out of training to "
                                    "measure preference accuracy")
    diagnostic_pairs: Int = Field(256, ge=0, description="fresh pairs labelled by the true reward each round, only "
                                  "to log accuracy (never trained on, not counted in the budget); 0 = off")
    starc_samples: Int = Field(10_000, ge=0, description="latest stored transitions on which each round logs the "
                               "STARC distance of the learned from the true reward (reward/starc_distance); 0 = off")
    labels_from: str | None = Field(None, description="an existing label store whose labels train the model first")
    segment_pool: Int = Field(100_000, gt=0, description="PrefPPO: recent transitions kept for segments")
    model: RewardModelConfig = Field(default_factory=RewardModelConfig)
    surf: SURFConfig = Field(default_factory=SURFConfig)
    heron: HeronConfig | None = Field(None, description="teacher heron: importance levels, margins, directions, "
                                      "tie rule")

    @field_validator("teacher")
    @classmethod
    def _check_teacher(cls, name: str) -> str:
        known = known_teachers()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(f"unknown teacher; {hint}known teachers: {', '.join(known)}")
        return name

    @model_validator(mode="after")
    def _check_heron(self) -> PreferenceConfig:
        heron = HeronTeacher.name
        if self.teacher == heron and self.heron is None:
            raise ValueError(f"teacher: {heron} needs a {heron}: section ranking the reward components (levels)")
        if self.teacher != heron and self.heron is not None:
            raise ValueError(f"the {heron}: section is only used with teacher: {heron} (teacher is {self.teacher})")
        if self.heron is not None and self.teacher_options:
            raise ValueError(f"teacher_options are B-Pref knobs; teacher {heron} takes its settings from {heron}:")
        if self.heron is not None and self.heron.per_transition and self.segment_length != 1:
            raise ValueError(f"{heron}.per_transition compares single transitions: set segment_length: 1 "
                             f"(got {self.segment_length})")
        return self


class VLMConfig(Strict):
    """A vision-language model (CLIP/SigLIP) as the reward (VLM-RM); frames are rendered from recorded states."""

    backend: Literal["transformers", "open_clip"] = "transformers"
    model_path: str | None = Field(None, description="local model directory (transformers) or checkpoint file "
                                   "(open_clip) with real CLIP/SigLIP weights; null = $ROBOTRL_CLIP_PATH")
    model_name: str | None = Field(None, description="open_clip architecture, e.g. ViT-B-32")
    allow_download: bool = Field(False, description="let transformers fetch a hub name given as model_path (online)")
    goal_prompts: list[str] = Field(default_factory=list, description="what the task should look like")
    baseline_prompts: list[str] = Field(default_factory=list, description="the neutral description, e.g. "
                                        "'a humanoid robot'")
    alpha: float = Field(0.0, ge=0.0, le=1.0, description="goal-baseline regularisation (0 = plain cosine)")
    success_head: str | None = Field(None, description="a success classifier fitted on this model's embeddings "
                                     "(`robotrl reward success-head`): the reward is then P(success | frame) and "
                                     "the prompts are not used")
    batch_size: Int = Field(64, gt=0, description="frames per model call")
    width: Int | None = Field(None, gt=0, description="frame width; null = the model's input size")
    height: Int | None = Field(None, gt=0, description="frame height; null = the model's input size")
    camera: str | int | None = Field(None, description="MuJoCo camera name or id; null = the env's default "
                                     "(textured/Humanoid-v5: VLM-RM's tracking camera)")
    fast_rendering: bool = Field(True, description="MuJoCo frames without multisampling and with smaller shadow "
                                 "maps: ~2.5x faster in software GL, nearly the same picture")
    device: Device = Field("auto", description="where the VLM runs: auto | cpu | cuda | cuda:N | mps")
    precision: Literal["float32", "bfloat16", "float16"] = Field("float32", description="autocast dtype of the "
                                                                  "model: bfloat16 is ~3x faster on CPUs with AMX, "
                                                                  "float16 suits GPUs")
    score_every: Literal["episode", "step"] = Field("episode", description="episode: buffer frames and score them "
                                                    "in batches (when a batch fills, before each update round and "
                                                    "checkpoint); step: one model call per env step (a baseline)")


class RewardCodeConfig(Strict):
    """Reward code (e.g. written by `robotrl reward generate`) run in the sandbox (`reward_learning.sandbox`)."""

    path: str | None = Field(None, description="a file defining compute_dense_reward(obs, action, next_obs, ...); "
                             "the run keeps a copy, reward_code.py, and a resumed run uses that copy")
    cpu_seconds: float = Field(5.0, gt=0, description="CPU-time limit of one evaluation (wall clock: twice that)")
    memory_mb: Int = Field(1024, gt=0, description="memory the reward code may use beyond the worker's own")
    batch_size: Int = Field(256, gt=0, description="off-policy agents: transitions per sandbox call (their rewards "
                            "are written into the replay buffer when a batch fills, before each update round and "
                            "checkpoint); PPO scores each rollout in one call")
    score_every: Literal["batch", "step"] = Field("batch", description="batch: score transitions in batches (see "
                                                  "batch_size); step: one sandbox call per env step (a baseline)")


class RewardConfig(Strict):
    source: Literal["env", "components", "preference", "vlm", "code"] = "env"
    weights: dict[str, float] = Field(default_factory=dict, description="signed weight per reward component")
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    vlm: VLMConfig = Field(default_factory=VLMConfig)
    code: RewardCodeConfig = Field(default_factory=RewardCodeConfig)

    @model_validator(mode="after")
    def _check_vlm(self) -> RewardConfig:
        if self.source == "code" and not self.code.path:
            raise ValueError("source: code needs code.path (a reward-code file, e.g. from `robotrl reward generate`)")
        uses_vlm = self.source == "vlm" or (self.source == "preference" and self.preference.teacher == "vlm")
        if uses_vlm and not self.vlm.goal_prompts and self.vlm.success_head is None:
            raise ValueError("source: vlm and preference teacher vlm need vlm.goal_prompts (or vlm.success_head)")
        if self.source == "vlm" and self.vlm.alpha > 0 and not self.vlm.baseline_prompts:
            raise ValueError("vlm.alpha > 0 needs vlm.baseline_prompts")
        return self


class WandbConfig(Strict):
    mode: Literal["disabled", "offline", "online"] = "disabled"
    project: str = "robotrl"
    entity: str | None = None


class LoggingConfig(Strict):
    tensorboard: bool = True
    wandb: WandbConfig = Field(default_factory=WandbConfig)


class VideoConfig(Strict):
    width: Int = Field(480, gt=0)
    height: Int = Field(480, gt=0)
    camera: str | int | None = None
    fps: Int = Field(30, gt=0)


class RunConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    seed: Int = 0
    device: Device = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    runs_dir: str = "runs"
    env: EnvConfig
    algo: AlgoConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: `1e5`, `3e-4`, `-.5` are numbers, not strings as in YAML 1.1."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML the way config files and overrides both are (see `_Loader`); raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (so `1e-3`, `[64, 64]`, `null` work).

    A section that is null (e.g. `reward.preference.heron` in a saved config) is filled by overrides below it.
    """
    if "=" not in override:
        raise ConfigError(f"override '{override}' must look like key.sub=value")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{override}' has an empty key part")
    try:
        value = parse_yaml(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{override}': value is not valid YAML ({err})") from None
    node = raw
    for i, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            raise ConfigError(f"override '{override}': '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                base: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (or start from `base`), apply overrides and validate; raise ConfigError on any problem."""
    source = str(path) if path is not None else "<config>"
    raw: dict[str, Any] = copy.deepcopy(base or {})
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = parse_yaml(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level")
        raw = loaded
    for override in overrides:
        apply_override(raw, override)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, raw)) from None


def format_validation_error(err: ValidationError, source: str, raw: dict[str, Any]) -> str:
    """One line per problem: `file: dotted.key: what is wrong`, with suggestions for unknown keys."""
    lines = [f"invalid config {source}:"]
    for problem in err.errors():
        loc = [str(p) for p in problem["loc"] if p not in AGENT_CONFIGS]
        key = ".".join(loc) or "<top level>"
        if problem["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1], raw)
            close = difflib.get_close_matches(loc[-1], allowed, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else f" (allowed: {', '.join(sorted(allowed))})"
            lines.append(f"  {key}: unknown key{hint}")
        elif problem["type"] == "union_tag_invalid" or problem["type"] == "union_tag_not_found":
            lines.append(f"  {key}.name: must be one of {', '.join(AGENT_CONFIGS)}")
        else:
            got = problem.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {key}: {problem['msg']}{shown}")
    return "\n".join(lines)


def _allowed_keys(loc: list[str], raw: dict[str, Any]) -> list[str]:
    """Field names of the schema section at `loc` (resolving the algo union by its name)."""
    model: type[BaseModel] = RunConfig
    for part in loc:
        if part == "algo":
            name = (raw.get("algo") or {}).get("name", "sac")
            model = AGENT_CONFIGS.get(name, SACConfig)
            continue
        annotation = model.model_fields[part].annotation
        options = [a for a in get_args(annotation) if a is not type(None)]
        annotation = options[0] if len(options) == 1 else annotation  # an optional section: X | None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return list(model.model_fields)


def dump_config(config: RunConfig) -> str:
    """The fully resolved config as YAML (saved in every run directory)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)

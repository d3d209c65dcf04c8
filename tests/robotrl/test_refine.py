"""`robotrl reward refine` on tiny Pendulum runs against the scripted LLM server: automatic feedback from the run's
replay buffer and evaluation, a person's typed feedback (and "q" to stop), the ranking of candidates' policy videos
from labels given while the labelling page is served, and the command's exit codes."""

from __future__ import annotations

import io
import json
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from reward_learning.label_store import LabelStore
from reward_learning.llm import OpenAICompatibleClient
from reward_learning.segments import Segments
from reward_learning.text2reward import GenerationConfig, StopRefinement, TrainingFeedback, sandbox_validator
from robotrl import refine
from robotrl.cli import main
from robotrl.core import checkpoint as ckpt
from robotrl.reward_cli import sample_transitions, task_description

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reward_learning"))
from fake_llm import FakeLLMServer  # noqa: E402  (the scripted server shared with the reward_learning tests)

STEPS = 250  # tiny runs: 100 random steps (learning_starts of the tiny config), then 150 policy steps


def reward_code(upright_weight: float, effort_weight: float) -> str:
    return textwrap.dedent(f'''
        import numpy as np

        def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
            upright = {upright_weight} * field(next_obs, "cos_theta")
            effort = {effort_weight} * np.square(action).sum(axis=-1)
            return upright - effort, {{"upright": upright, "effort": -effort}}
    ''').strip() + "\n"


def reply(code: str) -> str:
    return f"Better:\n```python\n{code.strip()}\n```"


BROKEN = reply("def compute_dense_reward(obs, action, next_obs):\n    return np.zeros(len(obs))")
DESCRIPTION = task_description("Pendulum-v1")


@pytest.fixture(scope="module")
def validate():
    transitions, components = sample_transitions("Pendulum-v1", 200, 0)
    return sandbox_validator(transitions, components)


@pytest.fixture
def trainer(tiny_raw, tmp_path):
    return refine.RewardTrainer(tiny_raw("sac", train={"eval_episodes": 1}), STEPS, tmp_path / "out")


def client(server: FakeLLMServer) -> OpenAICompatibleClient:
    return OpenAICompatibleClient(server.url, "fake", sleep=lambda s: None)


def last_user_turn(server: FakeLLMServer, request: int) -> str:
    return server.user_turns(request)[-1]


def test_automatic_loop_sends_the_runs_term_statistics_and_return(trainer, validate):
    first, second, third = (DESCRIPTION.bind(reward_code(w, 0.01)) for w in (1.0, 2.0, 3.0))
    with FakeLLMServer([reply(second), reply(third)]) as server:
        final = refine.refine_automatically(client(server), "keep the pendulum upright", DESCRIPTION, first, trainer,
                                            validate, iterations=2)
    out = trainer.out_dir
    assert final == out / refine.REFINED and final.read_text() == third
    assert (out / "refine1" / refine.TRAINED_CODE).read_text() == first
    assert (out / "refine2" / refine.TRAINED_CODE).read_text() == second  # the refinement was trained next
    feedback = json.loads((out / "refine1" / "feedback.json").read_text())
    # the statistics are the code's terms over the policy's transitions (after the 100 random steps) of the run
    run = out / "refine1" / "run"
    storage = ckpt.load(run / "checkpoint.pt", torch.device("cpu"))["buffer"]["storage"]
    cos = storage["next_obs"][100:STEPS, 0].double().numpy()
    assert feedback["term_stats"]["upright"]["mean"] == pytest.approx(cos.mean(), abs=1e-6)
    assert feedback["term_stats"]["upright"]["max"] == pytest.approx(cos.max(), abs=1e-6)
    assert set(feedback["term_stats"]) == {"reward", "upright", "effort"} and feedback["steps"] == STEPS
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert feedback["env_return"] == pytest.approx([m for m in metrics if "eval/return" in m][-1]["eval/return"])
    assert feedback["success_rate"] is None  # Pendulum has no success
    prompt = last_user_turn(server, 0)
    assert f"{STEPS} environment steps" in prompt and f"upright: mean {cos.mean():.4g}" in prompt
    assert f"reference reward: {feedback['env_return']:.4g}" in prompt
    assert "2.0 * field" in server.requests[1]["messages"][-2]["content"]  # the second prompt refines the second code


# valid on the 200 validation transitions, but an IndexError on the one-row batches scored before each update
FAILS_IN_TRAINING = reward_code(1.0, 0.01).replace(
    "return upright - effort,", "return upright - effort + 0.0 * np.arange(len(obs) - 1)[len(obs) - 2],")


def test_code_that_fails_during_training_is_sent_back_with_its_error(trainer, validate):
    failing = DESCRIPTION.bind(FAILS_IN_TRAINING)
    validate(failing)
    fixed = DESCRIPTION.bind(reward_code(1.0, 0.01))
    with FakeLLMServer([reply(fixed)]) as server:
        final = refine.refine_automatically(client(server), "keep the pendulum upright", DESCRIPTION, failing, trainer,
                                            validate, iterations=1)
    assert final is not None and final.read_text() == fixed
    feedback = json.loads((trainer.out_dir / "refine1" / "feedback.json").read_text())
    assert "IndexError" in feedback["error"] and feedback["term_stats"] == {} and 0 < feedback["steps"] < STEPS
    assert "the training run stopped after" in last_user_turn(server, 0)
    assert "IndexError" in last_user_turn(server, 0)


def test_typed_feedback_reaches_the_prompt_and_q_stops(trainer, validate, capsys):
    first, second, third = (DESCRIPTION.bind(reward_code(1.0, w)) for w in (0.01, 0.1, 0.2))
    answers = io.StringIO("swing up faster, the torque penalty is too strong\n\nq\n")
    with FakeLLMServer([reply(second), reply(third)]) as server:
        final = refine.refine_automatically(client(server), "keep the pendulum upright", DESCRIPTION, first, trainer,
                                            validate, iterations=5, answers=answers)
    assert len(server.requests) == 2  # "q" after the third run: no third refinement, no fourth run
    assert "Feedback from a person who looked at the result:\nswing up faster, the torque penalty is too strong" \
        in last_user_turn(server, 0)
    assert "Feedback from a person" not in last_user_turn(server, 1)  # an empty line sends the statistics only
    assert final.read_text() == third and (trainer.out_dir / "refine3" / "run").is_dir()
    assert not (trainer.out_dir / "refine3" / "feedback.json").exists()
    saved = json.loads((trainer.out_dir / "refine1" / "feedback.json").read_text())
    assert saved["human"] == "swing up faster, the torque penalty is too strong"
    out = capsys.readouterr().out
    assert "upright" in out and out.count("Your feedback for the LLM") == 3  # asked after each of the 3 runs


def label_by_preference(store_path: Path, order: list[int], delay: float) -> None:
    """A scripted person: after `delay`, label every query by the candidates' places in `order` (best first)."""
    time.sleep(delay)
    with LabelStore.open(store_path) as store:
        for query in store.pending_queries():
            left, right = (int(store.segment_info(s).run.removeprefix("candidate")) for s in
                           store.query_segments([query])[0])
            store.add_labels([query], ["left" if order.index(left) < order.index(right) else "right"], "web:tester")


def test_ranking_of_policy_videos_picks_the_preferred_candidate_and_prompts_with_it(trainer, validate, capsys):
    given = DESCRIPTION.bind(reward_code(1.0, 0.01))
    generated = [reward_code(2.0, 0.01), reward_code(1.0, 0.5)]
    served = []

    def wait(store_path: Path, query_ids: list[int]) -> None:
        labeller = threading.Thread(target=label_by_preference, args=(store_path, [2, 0, 1], 0.3))
        labeller.start()
        refine.serve_until_labelled(store_path, query_ids, poll_seconds=0.05)  # the real page, on a free port
        labeller.join()
        served.append(query_ids)

    config = GenerationConfig(rounds=0)
    # round 2's candidates are all rejected, so the loop ends with round 1's ranking after sending its prompt
    with FakeLLMServer([reply(c) for c in generated] + [BROKEN] * 3) as server:
        best = refine.refine_by_ranking(client(server), "keep the pendulum upright", DESCRIPTION, given, trainer,
                                        validate, iterations=2, count=3, config=config, video_steps=20, wait=wait)
    round1 = trainer.out_dir / "rank1"
    assert best == trainer.out_dir / refine.BEST and best.read_text() == DESCRIPTION.bind(generated[1])
    ranking = json.loads((round1 / "ranking.json").read_text())
    assert (ranking["best"], ranking["worst"], ranking["queries"]) == (2, 1, 3)
    assert [(r["candidate"], r["wins"], r["losses"]) for r in ranking["ranking"]] == [(2, 2, 0), (0, 1, 1), (1, 0, 2)]
    assert Path(ranking["ranking"][0]["run"]).is_dir() and "term_stats" in ranking["ranking"][0]["feedback"]
    with LabelStore.open(round1 / "labels.sqlite") as store:
        assert [store.segment_info(s).length for s in (1, 2, 3)] == [20, 20, 20]
        assert store.segment_states(1).shape[0] == 20  # videos can be rendered from the recorded states
    assert len(served) == 1 and "open http://127.0.0.1:" in capsys.readouterr().out
    round2 = server.requests[2]["messages"]
    assert "0.5 * np.square" in round2[-2]["content"]  # the preferred candidate's code is the one to improve
    prompt = round2[-1]["content"]
    assert "preferred the behaviour produced by this reward over the others (2 wins, 0 ties, 0 losses)" in prompt
    assert "2.0 * field" in prompt.split("this candidate least")[1]  # the least liked candidate's code is shown
    assert all(r["messages"] == round2 for r in server.requests[3:])  # one prompt, three samples


def test_a_candidate_whose_run_fails_is_left_out_and_the_others_keep_their_numbers(trainer, validate):
    generated = [FAILS_IN_TRAINING, reward_code(2.0, 0.01), reward_code(1.0, 0.5)]

    def wait(store_path: Path, query_ids: list[int]) -> None:
        label_by_preference(store_path, [2, 0, 3], 0.0)  # candidate 1 never reaches the page

    with FakeLLMServer([reply(c) for c in generated]) as server:
        best = refine.refine_by_ranking(client(server), "keep the pendulum upright", DESCRIPTION,
                                        DESCRIPTION.bind(reward_code(1.0, 0.01)), trainer, validate, iterations=1,
                                        count=4, config=GenerationConfig(rounds=0), video_steps=10, wait=wait)
    ranking = json.loads((trainer.out_dir / "rank1" / "ranking.json").read_text())
    assert [r["candidate"] for r in ranking["ranking"]] == [2, 0, 3]  # numbered as their folders
    assert [Path(r["code"]).parent.name for r in ranking["ranking"]] == ["candidate2", "candidate0", "candidate3"]
    assert best.read_text() == DESCRIPTION.bind(generated[1])


def test_rank_candidates_counts_equal_as_half_and_ignores_skips(tmp_path):
    store = LabelStore(tmp_path / "s.sqlite", env_id="Pendulum-v1", obs_shape=(3,), action_dim=1,
                       component_names=["torque_squared"])
    segments = Segments(obs=torch.zeros(3, 2, 3), action=torch.zeros(3, 2, 1), next_obs=torch.zeros(3, 2, 3),
                        env_reward=torch.zeros(3, 2), components=torch.zeros(3, 2, 1),
                        episode=torch.arange(3), start=torch.zeros(3, dtype=torch.int64))
    ids = store.add_segments(segments, "r")
    queries = store.add_queries([ids[0], ids[1], ids[2]], [ids[1], ids[2], ids[0]], round=0, sampler="all_pairs")
    store.add_labels(queries, ["equal", "left", "skip"], "a")
    ranking = refine.rank_candidates(store, {ids[0]: 0, ids[1]: 1, ids[2]: 2})
    assert [(s.candidate, s.score) for s in ranking] == [(1, 1.5), (0, 0.5), (2, 0.0)]
    store.close()


def run_refine(out: Path, *options: str) -> int:
    return main(["reward", "refine", "--env", "Pendulum-v1", "keep the pendulum upright", "--samples", "100",
                 "--out", str(out), "--no-cache", *options])


@pytest.fixture
def config_file(tiny_raw, tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_raw("sac", train={"eval_episodes": 1})))
    return path


def test_refine_command_end_to_end_and_without_a_valid_refinement(tmp_path, config_file, capsys):
    code = tmp_path / "reward.py"
    code.write_text(reward_code(1.0, 0.01))
    options = ("--code", str(code), "--config", str(config_file), "--steps", str(STEPS), "--iterations", "1",
               "--rounds", "0", "--model", "fake")
    with FakeLLMServer([reply(reward_code(1.0, 0.02)), BROKEN]) as server:
        assert run_refine(tmp_path / "out", "--llm", server.url, *options) == 0
        printed = capsys.readouterr().out
        refined = tmp_path / "out" / refine.REFINED
        assert f"refined reward  {refined}" in printed and "0.02 * np.square" in refined.read_text()
        assert (tmp_path / "out" / "refine1" / "run" / "checkpoint.pt").is_file()
        assert run_refine(tmp_path / "out", "--llm", server.url, *options) == 2  # never mixes with earlier results
        assert "already holds" in capsys.readouterr().err
        assert run_refine(tmp_path / "again", "--llm", server.url, *options) == 1
    assert "no valid refined reward code" in capsys.readouterr().err
    assert (tmp_path / "again" / "refine1" / "sample0_round0.error.txt").is_file()


@pytest.mark.parametrize("options, status, message", [
    (("--code", "GOOD", "--env", "Pendulm-v1"), 2, "Unknown env id 'Pendulm-v1'"),
    (("--code", "missing.py"), 2, "no reward code file at missing.py"),
    ((), 2, "pass the reward to refine with --code FILE"),
    (("--rank-videos", "1"), 2, "at least 2 candidates"),
    (("--code", "HOSTILE"), 1, "import of 'os' is not allowed"),
    (("--code", "GOOD", "--config", "CARTPOLE"), 2, "is for env CartPole-v1, not Pendulum-v1"),
    (("--code", "GOOD", "--steps", "50", "--config", "TINY"), 2, "must exceed algo.learning_starts (100)"),
])
def test_refine_command_rejects_bad_input(tmp_path, tiny_raw, config_file, capsys, options, status, message):
    files = {"HOSTILE": tmp_path / "hostile.py", "GOOD": tmp_path / "good.py", "CARTPOLE": tmp_path / "cp.yaml",
             "TINY": config_file}
    files["HOSTILE"].write_text("import os\ndef compute_dense_reward(obs, action, next_obs):\n    return obs[:, 0]\n")
    files["GOOD"].write_text(reward_code(1.0, 0.01))
    files["CARTPOLE"].write_text(yaml.safe_dump(tiny_raw("sac", env_id="CartPole-v1")))
    args = [str(files.get(o, o)) for o in options]
    with FakeLLMServer([]) as server:  # never asked: every mistake is caught before the LLM
        assert run_refine(tmp_path / "out", "--llm", server.url, "--model", "fake", *args) == status
    assert server.requests == []
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ask_person_adds_one_line_to_the_feedback(capsys):
    feedback = TrainingFeedback({}, steps=10, human="preferred over the others")
    assert refine.ask_person(feedback, io.StringIO("")).human == "preferred over the others"  # end of input
    assert refine.ask_person(feedback, io.StringIO("more\n")).human == "preferred over the others\nmore"
    with pytest.raises(StopRefinement):
        refine.ask_person(feedback, io.StringIO(" Q \n"))
    assert "q: stop refining" in capsys.readouterr().out

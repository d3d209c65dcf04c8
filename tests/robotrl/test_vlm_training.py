"""Vision-language rewards in training: frames from recorded states, batched scoring written into the replay buffer,
no update on unscored rewards, a short SAC run through the Trainer, and the textured scenes rendering headless."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import envs
from robotrl.config import ConfigError
from robotrl.core.buffers import ReplayBuffer
from robotrl.trainer import Trainer
from robotrl.vlm_rewards import VLMRewarder

pytest.importorskip("transformers")

GOAL = "a car at the peak of the mountain, next to the yellow flag"
ENV_ID = "textured/MountainCarContinuous-v0"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from reward_learning.vlm_tiny import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", prompts=[GOAL, "a car in the mountain"])


def vlm_section(model_path, **extra) -> dict:
    return {"source": "vlm", "vlm": {"model_path": str(model_path), "goal_prompts": [GOAL],
                                     "baseline_prompts": ["a car in the mountain"], "alpha": 0.5, "batch_size": 64,
                                     "device": "cpu", **extra}}


def rewarder_config(tiny_config, tiny_clip, **extra):
    return tiny_config("sac", env_id=ENV_ID, reward=vlm_section(tiny_clip, **extra),
                       algo={"learning_starts": 100, "train_every": 50, "gradient_steps": 10})


def fill(buffer: ReplayBuffer, rewarder: VLMRewarder, steps: int, num_envs: int = 2) -> list[int]:
    """Step `num_envs` MountainCar envs with random actions, storing rows with states like the trainer does;
    returns how many rows were pending (unscored) after each step."""
    vec = envs.make_vec(ENV_ID, num_envs, seed=0, record_state=True, render_mode=None)
    pending = []
    try:
        obs, _ = vec.reset(seed=0)
        rng = np.random.default_rng(0)
        for step in range(steps):
            action = rng.uniform(-1, 1, (num_envs, 1)).astype(np.float32)
            next_obs, reward, terminated, truncated, info = vec.step(action)
            buffer.add(obs=obs, action=action, next_obs=info["next_obs"], reward=np.zeros(num_envs),
                       terminated=terminated, truncated=truncated, state=info["state"],
                       episode_id=np.arange(num_envs), episode_step=np.full(num_envs, step))
            rewarder.collect(buffer, num_envs)
            pending.append(sum(len(rows) for rows in rewarder._pending))
            obs = next_obs
    finally:
        vec.close()
    return pending


def test_rewards_are_scored_in_batches_and_written_in_place(tiny_config, tiny_clip):
    config = rewarder_config(tiny_config, tiny_clip)
    rewarder = VLMRewarder.from_config(config)
    try:
        buffer = ReplayBuffer(100, (2,), 1, 0, state_dim=2)  # 100 rows: the ring wraps during the 70 steps
        pending = fill(buffer, rewarder, 70)
        assert max(pending) < 64 and pending[31] == 0  # a full batch of 64 is scored at once, at step 32
        assert rewarder.frames_scored == 128 and rewarder.model_calls == 2
        rewarder.flush(buffer)
        assert rewarder.frames_scored == 140 and rewarder.model_calls == 3
        # every stored row holds the reward of its own re-rendered frame
        stored = buffer.storage["reward"][: buffer.size]
        frames = rewarder.render(buffer.storage["state"][: buffer.size].numpy())
        torch.testing.assert_close(stored, rewarder.reward.score_frames(frames), atol=1e-5, rtol=0)
        assert frames.shape == (100, 32, 32, 3)  # rendered at the model's resolution
    finally:
        rewarder.close()


def test_score_every_step_calls_the_model_each_step(tiny_config, tiny_clip):
    rewarder = VLMRewarder.from_config(rewarder_config(tiny_config, tiny_clip, score_every="step"))
    try:
        buffer = ReplayBuffer(100, (2,), 1, 0, state_dim=2)
        assert max(fill(buffer, rewarder, 10)) == 0
        assert rewarder.model_calls == 10 and rewarder.frames_scored == 20
    finally:
        rewarder.close()


def test_sac_trains_on_scored_vlm_rewards_only(tiny_config, tiny_clip, monkeypatch):
    config = tiny_config("sac", env_id=ENV_ID, reward=vlm_section(tiny_clip),
                         algo={"learning_starts": 100, "train_every": 50, "gradient_steps": 20},
                         train={"total_steps": 300, "checkpoint_every": 150, "log_every": 100})
    trainer = Trainer(config, progress=False)
    updates = []
    original = trainer.agent.update

    def checked_update(batch):
        assert not trainer.rewarder._pending, "an update ran while frames were still unscored"
        updates.append(trainer.step)
        return original(batch)

    monkeypatch.setattr(trainer.agent, "update", checked_update)
    result = trainer.train()
    assert result.steps == 300 and len(updates) == 5 * 20  # rounds at steps 100, 150, ..., 300
    buffer = trainer.buffer
    stored = buffer.storage["reward"][: buffer.size]
    frames = trainer.rewarder.render(buffer.storage["state"][: buffer.size].numpy())
    torch.testing.assert_close(stored, trainer.rewarder.reward.score_frames(frames), atol=1e-5, rtol=0)
    assert trainer.rewarder.model_calls < 300 / 10  # batched, not one call per step
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("vlm/frames_scored" in row for row in logged)
    assert np.isfinite([row["eval/return"] for row in logged if "eval/return" in row]).all()


def test_on_policy_agents_are_refused(tiny_config, tiny_clip):
    config = tiny_config("ppo", env_id=ENV_ID, reward=vlm_section(tiny_clip))
    with pytest.raises(ConfigError, match="off-policy"):
        Trainer(config, progress=False)


def test_missing_weights_are_a_config_error_saying_what_to_do(tiny_config, tmp_path, monkeypatch):
    monkeypatch.delenv("ROBOTRL_CLIP_PATH", raising=False)
    config = tiny_config("sac", env_id=ENV_ID, reward=vlm_section(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="ROBOTRL_CLIP_PATH"):
        Trainer(config, progress=False)


def test_config_needs_goal_prompts(tiny_config):
    with pytest.raises(ConfigError, match="goal_prompts"):
        tiny_config("sac", reward={"source": "vlm"})


@pytest.mark.parametrize("env_id", ["textured/Humanoid-v5", "textured/CartPole-v1", ENV_ID])
def test_textured_scenes_render_headless(env_id):
    kwargs = {"terminate_when_unhealthy": False} if "Humanoid" in env_id else {}
    env = envs.make(env_id, width=64, height=48, **kwargs)
    try:
        env.reset(seed=0)
        env.step(env.action_space.sample())
        frame = env.render()
    finally:
        env.close()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    top, bottom = frame[:4].reshape(-1, 3).mean(0), frame[-4:].reshape(-1, 3).mean(0)
    assert top[2] > top[0] + 20  # blue sky above
    assert bottom[1] > bottom[2] + 20  # green ground below
    assert envs.get_env_spec(env_id).reward_terms is not None


def test_textured_humanoid_model_merges_our_scene_into_gymnasiums_xml():
    import xml.etree.ElementTree as ET

    from envs.vlm_scenes import _gymnasium_asset, textured_model

    path = textured_model(_gymnasium_asset("humanoid.xml"))
    assert textured_model(_gymnasium_asset("humanoid.xml")) == path  # cached by content
    root = ET.parse(path).getroot()
    skyboxes = [t.get("name") for t in root.iter("texture") if t.get("type") == "skybox"]
    assert skyboxes == ["robotrl_sky"]
    floor = next(g for g in root.iter("geom") if g.get("name") == "floor")
    assert floor.get("material") == "robotrl_floor" and "rgba" not in floor.attrib
    assert root.find("default/geom").get("material") == "robotrl_body"


def test_vlm_teacher_labels_preference_queries_in_a_pebble_run(tiny_config, tiny_clip, tmp_path):
    """`teacher: vlm`: the model compares the re-rendered final frames of each query's segments; its labels are the
    ones in the label store, and a label agrees with the VLM's own scores of those frames."""
    from reward_learning.label_store import LabelStore
    from reward_learning.segments import Label

    reward = {"source": "preference",
              "preference": {"teacher": "vlm", "teacher_options": {"margin": 0.0}, "budget": 20,
                             "queries_per_round": 10, "segment_length": 10, "query_every": 200,
                             "unsup_steps": 100, "diagnostic_pairs": 0, "starc_samples": 0,
                             "model": {"hidden_sizes": [16, 16], "max_epochs": 3}},
              "vlm": vlm_section(tiny_clip)["vlm"]}
    config = tiny_config("sac", env_id=ENV_ID, reward=reward, train={"total_steps": 600},
                         algo={"learning_starts": 100})
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    teacher = trainer.preference.teacher
    trainer.train()
    with LabelStore.open(tmp_path / "run" / "labels.sqlite") as store:
        pairs = store.labelled_pairs(include_skipped=True)
        only_vlm = store.labelled_pairs(include_skipped=True, labeller="teacher:vlm")
    assert len(pairs.labels) == len(only_vlm.labels) == 20
    left, right = teacher.segment_scores(pairs.left), teacher.segment_scores(pairs.right)
    expected = np.where((right - left).numpy() > 0, Label.RIGHT, Label.LEFT)
    assert np.array_equal(pairs.labels, expected)


def test_vlm_teacher_rejects_unknown_options(tiny_config, tiny_clip, tmp_path):
    reward = {"source": "preference", "preference": {"teacher": "vlm", "teacher_options": {"beta": 1.0}},
              "vlm": vlm_section(tiny_clip)["vlm"]}
    config = tiny_config("sac", env_id=ENV_ID, reward=reward)
    with pytest.raises(ConfigError, match="teacher vlm takes frames and margin"):
        Trainer(config, run_dir=tmp_path / "run", progress=False)


def test_reward_compare_measures_a_vlm_reward_on_rendered_states(tiny_clip, tmp_path, capsys):
    import yaml

    from robotrl.cli import main

    config = tmp_path / "vlm.yaml"
    config.write_text(yaml.safe_dump({"name": "vlm", "env": {"id": ENV_ID}, "algo": {"name": "sac"},
                                      "reward": vlm_section(tiny_clip)}))
    spec = f"vlm:{config}"
    argv = ["reward", "compare", "--env", ENV_ID, "env", spec, f"negated:{spec}", "--samples", "300",
            "--out", str(tmp_path / "h.png")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith(f"{spec} ")).split()[1:]
    assert float(row[2]) == pytest.approx(1.0) and 0.0 < float(row[0]) < 1.0  # -R is farthest; env is elsewhere
    assert main([*argv, "--method", "epic"]) == 2
    assert "compare a vlm: source with --method starc_val" in capsys.readouterr().err


def test_vlm_reward_along_an_episode_is_plotted_next_to_its_frames(tiny_config, tiny_clip, tmp_path):
    from robotrl.plotting import plot_reward_along_episode
    from robotrl.vlm_rewards import episode_vlm_rewards, load_vlm

    config = rewarder_config(tiny_config, tiny_clip)
    frames, rewards = episode_vlm_rewards(config, seed=3, max_steps=40)
    assert frames.shape[0] == 40 and frames.dtype == np.uint8 and set(rewards) == {"vlm", "env"}
    reward, renderer = load_vlm(config)
    try:
        assert np.allclose(rewards["vlm"], reward.score_frames(frames).numpy())  # the frames the model scored
    finally:
        renderer.close()
    out = plot_reward_along_episode(frames, rewards, tmp_path / "episode.png", shown=6)
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="one reward per frame"):
        plot_reward_along_episode(frames, {"vlm": rewards["vlm"][:-1]}, tmp_path / "x.png")


def test_a_success_head_is_the_reward_when_configured(tiny_config, tiny_clip, tmp_path):
    """`reward.vlm.success_head`: the buffer holds P(success | frame) of each row's re-rendered frame."""
    from reward_learning.vlm import load_transformers_backend
    from reward_learning.vlm_success import SuccessClassifier

    probe = VLMRewarder.from_config(rewarder_config(tiny_config, tiny_clip))
    try:
        buffer = ReplayBuffer(64, (2,), 1, 0, state_dim=2)
        fill(buffer, probe, 64)
        frames = probe.render(buffer.storage["state"][: buffer.size].numpy())
        position = buffer.storage["next_obs"][: buffer.size, 0].numpy()
        success = position > np.median(position)  # "further right than usual"
    finally:
        probe.close()
    head, _ = SuccessClassifier.fit(load_transformers_backend(tiny_clip), frames, success, holdout=0.0)
    path = head.save(tmp_path / "head.pt")
    rewarder = VLMRewarder.from_config(rewarder_config(tiny_config, tiny_clip, success_head=str(path)))
    try:
        assert isinstance(rewarder.reward, SuccessClassifier)
        buffer = ReplayBuffer(64, (2,), 1, 0, state_dim=2)
        fill(buffer, rewarder, 32)
        rewarder.flush(buffer)
        stored = buffer.storage["reward"][: buffer.size]
        assert stored.min() >= 0 and stored.max() <= 1
        expected = head.score_frames(rewarder.render(buffer.storage["state"][: buffer.size].numpy()))
        torch.testing.assert_close(stored, expected, atol=1e-5, rtol=0)
    finally:
        rewarder.close()
    with pytest.raises(ConfigError, match="reward.vlm.success_head: no success head"):
        VLMRewarder.from_config(rewarder_config(tiny_config, tiny_clip, success_head=str(tmp_path / "none.pt")))


def test_cli_fits_a_success_head_and_plots_an_episode(tiny_clip, tmp_path, capsys):
    import yaml

    from robotrl.cli import main

    config = tmp_path / "vlm.yaml"
    config.write_text(yaml.safe_dump({"name": "vlm", "env": {"id": ENV_ID}, "algo": {"name": "sac"},
                                      "reward": vlm_section(tiny_clip)}))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (30, 32, 32, 3)).astype(np.uint8)
    frames[::2, :8] = (250, 10, 10)  # the "successful" half has a red band on top
    np.savez(tmp_path / "frames.npz", frames=frames, success=np.arange(30) % 2 == 0)
    head = tmp_path / "head.pt"
    assert main(["reward", "success-head", str(tmp_path / "frames.npz"), "--config", str(config), "--out",
                 str(head)]) == 0
    printed = capsys.readouterr().out
    train_accuracy = float(printed.split("train accuracy ")[1].split(",")[0])
    assert train_accuracy >= 0.9 and f"reward.vlm.success_head={head}" in printed
    out = tmp_path / "episode.png"
    assert main(["reward", "vlm-episode", str(config), "--max-steps", "20", "--out", str(out),
                 f"reward.vlm.success_head={head}"]) == 0
    assert "20 steps; VLM reward" in capsys.readouterr().out and out.read_bytes()[:4] == b"\x89PNG"
    assert main(["reward", "success-head", str(tmp_path / "none.npz"), "--config", str(config), "--out",
                 str(head)]) == 2
    assert "no labelled frames" in capsys.readouterr().err

"""`robotrl reward train|info|export` on small synthetic label stores, and the reward panels of `robotrl plot`."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import envs
from reward_learning.label_store import LabelStore
from reward_learning.models import RewardEnsemble
from reward_learning.segments import Label, Segments
from robotrl.cli import main
from robotrl.plotting import REWARD_METRICS, reward_metrics

LENGTH = 10
PAIRS = 240
PENDING = 4
SKIPPED = 5  # queries a second labeller skipped (the oracle's labels of them still count)


def component_names(env_id: str) -> list[str]:
    env = envs.make(env_id, render_mode=None)
    try:
        return [c.name for c in env.reward_spec]
    finally:
        env.close()


def random_segments(rng: np.random.Generator, count: int, obs_dim: int, components: int, first_episode: int,
                    discrete: bool = False) -> Segments:
    """`count` slices of LENGTH steps, one episode each; env_reward is the synthetic reward -obs[0]**2."""
    obs = torch.as_tensor(rng.uniform(-1, 1, (count, LENGTH, obs_dim)), dtype=torch.float32)
    action = torch.as_tensor(rng.integers(0, 2, (count, LENGTH, 1)) if discrete else
                             rng.uniform(-1, 1, (count, LENGTH, 1)), dtype=torch.float32)
    return Segments(obs=obs, action=action, next_obs=obs.roll(-1, dims=1), env_reward=-obs[..., 0] ** 2,
                    components=torch.zeros(count, LENGTH, components),
                    episode=torch.arange(first_episode, first_episode + count), start=torch.zeros(count, dtype=int))


def oracle(left: Segments, right: Segments) -> list[Label]:
    """Prefer the segment with the larger synthetic return."""
    return [Label.RIGHT if r > lt else Label.LEFT
            for lt, r in zip(left.env_reward.sum(1).tolist(), right.env_reward.sum(1).tolist(), strict=True)]


def build_store(path: Path, env_id: str = "Pendulum-v1", pairs: int = PAIRS, discrete: bool = False) -> Path:
    """A store of `pairs` oracle-labelled queries, SKIPPED extra skips by web:alice and PENDING unlabelled queries."""
    obs_dim = 4 if discrete else 3
    rng, names = np.random.default_rng(0), component_names(env_id)
    with LabelStore(path, env_id=env_id, obs_shape=(obs_dim,), action_dim=1, component_names=names) as store:
        left = random_segments(rng, pairs + PENDING, obs_dim, len(names), 0, discrete)
        right = random_segments(rng, pairs + PENDING, obs_dim, len(names), pairs + PENDING, discrete)
        ids = store.add_queries(store.add_segments(left, "synthetic"), store.add_segments(right, "synthetic"),
                                round=0, sampler="uniform")
        store.add_labels(ids[:pairs], oracle(left[:pairs], right[:pairs]), labeller="oracle")
        store.add_labels(ids[:SKIPPED], [Label.SKIP] * SKIPPED, labeller="web:alice")
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("store") / "labels.sqlite")


def write_yaml(path: Path, raw: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("command", ["train", "info", "export"])
def test_reward_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main(["reward", command, "--help"])
    assert info.value.code == 0
    assert f"robotrl reward {command}" in capsys.readouterr().out


def test_reward_train_learns_the_synthetic_reward(store_path, tmp_path, capsys):
    out = tmp_path / "model.pt"
    code = main(["reward", "train", "--labels", str(store_path), "--out", str(out), "--holdout", "0.25",
                 "--device", "cpu", "model.hidden_sizes=[32,32]", "model.max_epochs=30", "model.batch_size=16",
                 "model.lr=1e-3"])
    assert code == 0
    text = capsys.readouterr().out
    held_out = float(text.split("held-out accuracy")[1].split()[0])
    assert held_out > 0.7, text
    assert "180 train / 60 held out" in text and f"({SKIPPED} skipped" in text
    model = RewardEnsemble.load(out)
    assert model.config.hidden_sizes == [32, 32] and not model.discrete_actions and model.action_dim == 1
    obs = torch.tensor([[0.0, 0.5, 0.5], [0.95, 0.5, 0.5]])
    reward = model({"obs": obs, "action": torch.zeros(2, 1)})
    assert reward[0] > reward[1]  # the learned reward ranks states like -obs[0]**2


def test_reward_train_takes_the_model_config_of_a_run_dir(store_path, tiny_raw, tmp_path, capsys):
    raw = tiny_raw("sac", reward={"preference": {"model": {"hidden_sizes": [16], "ensemble_size": 2}}})
    run = write_yaml(tmp_path / "run" / "config.yaml", raw).parent
    out = tmp_path / "model.pt"
    assert main(["reward", "train", "--labels", str(store_path), "--config", str(run), "--epochs", "1",
                 "--out", str(out), "--device", "cpu"]) == 0
    model = RewardEnsemble.load(out)
    assert model.config.hidden_sizes == [16] and model.size == 2 and model.config.max_epochs == 1
    assert "epochs" in capsys.readouterr().out


def test_reward_train_one_hot_encodes_discrete_actions(tmp_path, capsys):
    store = build_store(tmp_path / "cartpole" / "labels.sqlite", env_id="CartPole-v1", pairs=20, discrete=True)
    assert main(["reward", "train", "--labels", str(store.parent), "--epochs", "1", "--device", "cpu",
                 "model.hidden_sizes=[8]"]) == 0
    model = RewardEnsemble.load(store.parent / "reward_model.pt")  # default: next to the store
    assert model.discrete_actions and model.action_dim == 2


def test_reward_train_user_errors_exit_2(store_path, tiny_raw, tmp_path, capsys):
    assert main(["reward", "train", "--labels", str(tmp_path / "missing.sqlite")]) == 2
    assert "no label store" in capsys.readouterr().err

    names = component_names("Pendulum-v1")
    with LabelStore(tmp_path / "skips.sqlite", env_id="Pendulum-v1", obs_shape=(3,), action_dim=1,
                    component_names=names) as store:
        segments = random_segments(np.random.default_rng(1), 2, 3, len(names), 0)
        query = store.add_queries(*([i] for i in store.add_segments(segments, "r")), round=0, sampler="uniform")
        store.add_labels(query, [Label.SKIP], labeller="oracle")
    assert main(["reward", "train", "--labels", str(tmp_path / "skips.sqlite")]) == 2
    assert "no usable labels" in capsys.readouterr().err

    config = write_yaml(tmp_path / "cartpole.yaml", tiny_raw("ppo"))
    assert main(["reward", "train", "--labels", str(store_path), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "CartPole-v1" in err and "Pendulum-v1" in err and "Traceback" not in err

    assert main(["reward", "train", "--labels", str(store_path), "model.hiden_sizes=[8]"]) == 2
    assert "model.hiden_sizes: unknown key (did you mean hidden_sizes?)" in capsys.readouterr().err
    assert main(["reward", "train", "--labels", str(store_path), "algo.lr=1"]) == 2
    assert "model.<key>=value" in capsys.readouterr().err
    assert main(["reward", "train", "--labels", str(store_path), "model.lr=-1"]) == 2
    assert "model.lr" in capsys.readouterr().err


def test_reward_info_prints_counts_and_json(store_path, capsys):
    assert main(["reward", "info", str(store_path)]) == 0
    text = capsys.readouterr().out
    assert "Pendulum-v1" in text and "angle_squared" in text
    assert f"oracle {PAIRS}" in text and f"web:alice {SKIPPED}" in text and f"skip {SKIPPED}" in text
    assert [line.split()[-1] for line in text.splitlines() if line.startswith("pending queries")] == [str(PENDING)]

    assert main(["reward", "info", str(store_path.parent), "--json"]) == 0  # a run directory works too
    info = json.loads(capsys.readouterr().out)
    assert info["meta"]["env_id"] == "Pendulum-v1" and info["meta"]["obs_shape"] == [3]
    assert info["counts"]["pending"] == PENDING and info["counts"]["labels"] == PAIRS + SKIPPED
    assert info["labels_by_labeller"] == {"oracle": PAIRS, "web:alice": SKIPPED}
    assert sum(info["labels_by_kind"].values()) == PAIRS + SKIPPED


def test_reward_export_json_and_csv_round_trip(store_path, tmp_path, capsys):
    with LabelStore.open(store_path) as store:
        records = store.labels()
    assert main(["reward", "export", str(store_path), "--format", "json", "--out", str(tmp_path / "l.json")]) == 0
    assert f"exported {len(records)} labels and {PENDING} pending queries" in capsys.readouterr().out
    data = json.loads((tmp_path / "l.json").read_text())
    labelled = [r for r in data["rows"] if r["label"] is not None]
    assert data["meta"]["env_id"] == "Pendulum-v1"
    assert [(r["label_id"], r["query_id"], r["label"], r["labeller"]) for r in labelled] == \
        [(r.id, r.query_id, r.label.name.lower(), r.labeller) for r in records]
    first = labelled[0]
    assert (first["left_run"], first["left_start"], first["left_length"], first["latest"]) == \
        ("synthetic", 0, LENGTH, True)

    assert main(["reward", "export", str(store_path), "--format", "csv", "--out", str(tmp_path / "l.csv")]) == 0
    with (tmp_path / "l.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sum(r["label"] != "" for r in rows) == len(records)
    assert sum(r["label"] == "" for r in rows) == PENDING
    assert [int(r["right_episode"]) for r in rows[:2]] == [first["right_episode"], labelled[1]["right_episode"]]

    capsys.readouterr()
    assert main(["reward", "export", str(store_path), "--format", "csv"]) == 0  # stdout
    assert len(capsys.readouterr().out.splitlines()) == len(records) + PENDING + 1


def png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


def fake_run(path: Path, reward: bool) -> Path:
    """A run directory with a config.yaml and metrics.jsonl (with `reward/...` metrics if `reward`)."""
    write_yaml(path / "config.yaml", {"name": path.name})
    records = []
    for step in range(0, 5000, 1000):
        record = {"step": step, "eval/return": -1000.0 + step / 10, "train/episode_return": -900.0 + step / 10}
        if reward:
            record.update({"reward/true_pref_accuracy": 0.5 + step / 20000, "reward/train_accuracy": 0.9,
                           "reward/return_correlation": step / 5000, "reward/starc_distance": 0.5 - step / 20000})
        records.append(record)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_plot_adds_reward_panels_for_preference_runs(tmp_path, capsys):
    pref, plain = fake_run(tmp_path / "pref", True), fake_run(tmp_path / "plain", False)
    assert reward_metrics([pref, plain]) == [m for m in REWARD_METRICS if m != "reward/holdout_accuracy"]
    assert reward_metrics([plain]) == []
    assert main(["plot", str(pref), str(plain), "--out", str(tmp_path / "pref.png")]) == 0
    assert main(["plot", str(plain), "--out", str(tmp_path / "plain.png")]) == 0
    assert main(["plot", str(pref), "--metric", "eval/return", "--out", str(tmp_path / "one.png")]) == 0
    (w2, h2), (w1, h1), (_, h_one) = (png_size(tmp_path / f"{n}.png") for n in ("pref", "plain", "one"))
    assert h2 == 2 * h1 == 2 * h_one  # a second row of reward panels only by default and only for reward metrics
    assert w2 > w1  # four reward panels side by side

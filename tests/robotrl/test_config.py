"""Config loading, overrides and the error messages a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robotrl.agents import AGENT_CONFIGS
from robotrl.config import ConfigError, RunConfig, apply_override, dump_config, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))


def write(tmp_path: Path, raw, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_configs_folder_is_not_empty():
    assert len(CONFIG_FILES) >= 2


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.name for p in CONFIG_FILES])
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    config = load_config(path)
    assert isinstance(config, RunConfig)
    assert config.algo.name in AGENT_CONFIGS
    import envs

    assert config.env.id in envs.list_envs()
    # the resolved config saved with every run loads back to the same thing
    again = load_config(write(tmp_path, dump_config(config)))
    assert again == config


def test_override_values_are_parsed():
    raw: dict = {}
    for override in ("algo.actor_lr=1e-3", "algo.hidden_sizes=[64, 64]", "algo.target_entropy=null", "seed=3",
                     "name=my-run", "train.save_buffer=false", "env.id=Pendulum-v1", "train.total_steps=2e4",
                     "algo.gamma=0.98", "env.kwargs.g=9.81", "reward.weights={angle_squared: -1}"):
        apply_override(raw, override)
    assert raw["algo"]["actor_lr"] == 1e-3 and isinstance(raw["algo"]["actor_lr"], float)
    assert raw["algo"]["hidden_sizes"] == [64, 64]
    assert "target_entropy" in raw["algo"] and raw["algo"]["target_entropy"] is None
    assert raw["seed"] == 3 and isinstance(raw["seed"], int)
    assert raw["name"] == "my-run" and raw["env"]["id"] == "Pendulum-v1"
    assert raw["train"]["save_buffer"] is False
    assert raw["train"]["total_steps"] == 20000.0
    assert raw["algo"]["gamma"] == 0.98 and raw["env"]["kwargs"]["g"] == 9.81
    assert raw["reward"]["weights"] == {"angle_squared": -1}


def test_overrides_apply_on_top_of_a_file():
    config = load_config(CONFIGS / "pendulum_sac.yaml",
                         ["algo.actor_lr=1e-4", "algo.hidden_sizes=[32]", "train.total_steps=2e4", "seed=5",
                          "algo.target_entropy=null", "algo.target_entropy=-0.5"])
    assert config.algo.actor_lr == pytest.approx(1e-4)
    assert config.algo.hidden_sizes == [32]
    assert config.train.total_steps == 20000 and isinstance(config.train.total_steps, int)
    assert config.seed == 5 and config.algo.target_entropy == -0.5
    assert config.algo.critic_lr == pytest.approx(1e-3)  # untouched keys keep the file's value


@pytest.mark.parametrize("override, fragment", [
    ("algo.actor_lr", "key.sub=value"),
    ("algo..lr=1", "empty key part"),
    ("seed.x=1", "'seed' is a value, not a section"),
    ("algo.hidden_sizes=[1, 2", "not valid YAML"),
])
def test_malformed_overrides(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace(".", r"\.")):
        load_config(CONFIGS / "pendulum_sac.yaml", [override])


def test_unknown_key_in_file_names_key_file_and_close_match(tmp_path):
    raw = yaml.safe_load((CONFIGS / "pendulum_sac.yaml").read_text())
    raw["algo"]["actor_lrr"] = 1e-3
    path = write(tmp_path, raw, "typo.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "algo.actor_lrr" in message and "unknown key" in message
    assert "did you mean actor_lr" in message


@pytest.mark.parametrize("override, key, suggestion", [
    ("trian.total_steps=5", "trian", "train"),
    ("train.totl_steps=5", "train.totl_steps", "total_steps"),
    ("logging.wandb.mod=offline", "logging.wandb.mod", "mode"),
    ("env.num_env=2", "env.num_env", "num_envs"),
])
def test_unknown_key_from_override_suggests_close_match(override, key, suggestion):
    path = CONFIGS / "pendulum_sac.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    message = str(info.value)
    assert f"{key}: unknown key" in message and suggestion in message and str(path) in message


def test_unknown_key_with_no_close_match_lists_allowed_keys():
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "cartpole_ppo.yaml", ["algo.zzzz=1"])
    message = str(info.value)
    assert "algo.zzzz" in message and "allowed:" in message and "clip_range" in message  # PPO's own keys


@pytest.mark.parametrize("override, key", [
    ("train.total_steps=abc", "train.total_steps"),
    ("algo.batch_size=[1]", "algo.batch_size"),
    ("algo.gamma=1.5", "algo.gamma"),
    ("algo.actor_lr=-1", "algo.actor_lr"),
    ("train.total_steps=0", "train.total_steps"),
    ("env.num_envs=0", "env.num_envs"),
    ("env.vectorization=threads", "env.vectorization"),
    ("name=has space", "name"),
])
def test_wrong_type_or_out_of_range_names_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "pendulum_sac.yaml", [override])
    message = str(info.value)
    assert f"  {key}: " in message, message
    assert "pendulum_sac.yaml" in message


def test_unknown_algo_name():
    with pytest.raises(ConfigError, match=r"algo\.name: must be one of sac, td3, ppo"):
        load_config(CONFIGS / "pendulum_sac.yaml", ["algo.name=dqn"])


def test_missing_required_section_is_named():
    with pytest.raises(ConfigError, match=r"env: Field required"):
        load_config(None, [], base={"name": "x", "algo": {"name": "sac"}})


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/dir/config.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_non_mapping_yaml(tmp_path, text):
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(ConfigError, match="expected a mapping") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_invalid_yaml_syntax(tmp_path):
    path = write(tmp_path, "name: [unclosed\n", "broken.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_algo_specific_defaults_and_base_dict():
    config = load_config(None, ["algo.name=ppo"], base={"name": "x", "env": {"id": "CartPole-v1"}, "algo": {}})
    assert config.algo.name == "ppo" and config.algo.hidden_sizes == [64, 64] and config.algo.activation == "tanh"
    base = {"name": "x", "env": {"id": "Pendulum-v1"}, "algo": {"name": "sac"}}
    load_config(None, ["algo.tau=0.5"], base=base)
    assert "tau" not in base["algo"]  # the caller's dict is not modified


def test_scientific_notation_reads_the_same_in_files_and_overrides(tmp_path):
    """YAML 1.1 reads `3e2` as a string; files and overrides both read it (and `1e1`, `-.5`) as a number."""
    raw = yaml.safe_load((CONFIGS / "pendulum_sac.yaml").read_text())
    raw["train"]["total_steps"] = "@steps"
    raw["env"]["kwargs"] = {"g": "@g", "offset": "@offset", "tag": "v1e1"}
    text = yaml.safe_dump(raw).replace("'@steps'", "3e2").replace("'@g'", "1e1").replace("'@offset'", "-.5")
    from_file = load_config(write(tmp_path, text))
    assert from_file.train.total_steps == 300 and from_file.env.kwargs == {"g": 10.0, "offset": -0.5, "tag": "v1e1"}
    from_overrides = load_config(CONFIGS / "pendulum_sac.yaml", ["train.total_steps=3e2", "env.kwargs.g=1e1",
                                                                  "env.kwargs.offset=-.5", "env.kwargs.tag=v1e1"])
    assert from_overrides.train.total_steps == 300 and from_overrides.env.kwargs == from_file.env.kwargs
    assert isinstance(from_overrides.env.kwargs["g"], float)


def test_overrides_below_sections_that_are_null_in_a_saved_config(tmp_path):
    saved = write(tmp_path, dump_config(load_config(CONFIGS / "pendulum_sac.yaml")), "config.yaml")
    assert "teacher_weights: null" in saved.read_text() and "heron: null" in saved.read_text()
    config = load_config(saved, ["reward.preference.teacher_weights.angle_squared=1"])
    assert config.reward.preference.teacher_weights == {"angle_squared": 1.0}
    config = load_config(saved, ["reward.preference.teacher=heron", "reward.preference.heron.levels=[angle_squared]",
                                 "reward.preference.heron.ties=equal"])
    assert config.reward.preference.heron.levels == ["angle_squared"] and config.reward.preference.heron.ties == "equal"


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:-1", "cpu0", ""])
def test_unknown_device_is_rejected_when_the_config_is_read(device):
    with pytest.raises(ConfigError, match=r"device: .*must be auto, cpu, cuda, cuda:N"):
        load_config(CONFIGS / "pendulum_sac.yaml", [f"device={device}"])
    with pytest.raises(ConfigError, match=r"reward\.vlm\.device: .*must be auto, cpu, cuda, cuda:N"):
        load_config(CONFIGS / "pendulum_sac.yaml", [f"reward.vlm.device={device}"])


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "CUDA:0", "mps"])
def test_known_devices_validate_without_a_gpu(device):
    assert load_config(CONFIGS / "pendulum_sac.yaml", [f"device={device}"]).device == device


def test_unknown_teacher_is_rejected_with_a_close_match_and_the_known_names():
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "pendulum_sac.yaml", ["reward.preference.teacher=orcale"])
    message = str(info.value)
    assert "reward.preference.teacher:" in message and "did you mean oracle" in message
    assert all(name in message for name in ("noisy", "heron", "vlm", "human"))


@pytest.mark.parametrize("teacher", ["oracle", "noisy", "mistake", "skip", "myopic", "equal", "human", "vlm", "heron"])
def test_every_teacher_name_validates(teacher):
    from robotrl.config import PreferenceConfig

    heron = {"levels": ["angle_squared"]} if teacher == "heron" else None
    assert PreferenceConfig(teacher=teacher, heron=heron).teacher == teacher


@pytest.mark.parametrize("override", ["train.total_steps=true", "seed=false", "env.num_envs=true",
                                      "reward.preference.budget=true", "env.max_episode_steps=true"])
def test_booleans_are_not_accepted_as_integers(override):
    with pytest.raises(ConfigError, match="expected an integer, got a boolean"):
        load_config(CONFIGS / "pendulum_sac.yaml", [override])

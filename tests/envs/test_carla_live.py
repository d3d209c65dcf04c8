"""The CARLA env: failing fast and clearly without a package or a server (always run), and integration tests against
a live CARLA 0.9.16 server at ROBOTRL_CARLA_HOST:ROBOTRL_CARLA_PORT (default 127.0.0.1:2000), skipped when the
`carla` package is missing or no server answers there."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import envs
from envs import carla_env
from envs.carla_env import CarlaNotInstalledError, CarlaServerError, CarlaUnavailableError, ServerProcess
from envs.components import combine_components

HOST = os.environ.get("ROBOTRL_CARLA_HOST", "127.0.0.1")
PORT = int(os.environ.get("ROBOTRL_CARLA_PORT", "2000"))
HAS_CARLA = importlib.util.find_spec("carla") is not None
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "carla_sac.yaml"


def free_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def expected_error(port: int) -> tuple[type[Exception], str]:
    """What making the env must raise here: install the extra without the package, else start a server."""
    if HAS_CARLA:
        return CarlaServerError, f"CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}"
    return CarlaNotInstalledError, "pip install 'robotrl[carla]'"


# --------------------------------------------------------------------------------------------------------------------
# no server needed


def test_registration_does_not_import_carla():
    code = "import sys, envs; assert 'carla' not in sys.modules; print(' '.join(envs.list_envs('driving')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "carla/Town01-v0" in out.stdout.split()


def test_making_the_env_without_a_server_fails_fast_and_says_what_to_do():
    port = free_port()
    error, hint = expected_error(port)
    start = time.monotonic()
    with pytest.raises(error) as caught:
        envs.make("carla/Town01-v0", port=port)
    assert time.monotonic() - start < 5.0
    assert hint in str(caught.value)
    assert isinstance(caught.value, CarlaUnavailableError) and isinstance(caught.value, ValueError)  # the CLI's kind


def test_missing_package_says_to_install_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "carla", None)  # makes `import carla` raise ImportError
    with pytest.raises(CarlaNotInstalledError, match=r"pip install 'robotrl\[carla\]'") as caught:
        envs.make("carla/Town01-v0", port=free_port())
    assert isinstance(caught.value, ImportError)


def test_a_failed_connection_leaves_no_env_registered_on_the_server():
    port = free_port()
    with pytest.raises(CarlaUnavailableError):
        envs.make("carla/Town01-v0", port=port)
    assert ("127.0.0.1", port) not in carla_env._SERVER_USERS


def test_only_the_last_env_of_the_process_on_a_server_restores_its_settings(monkeypatch):
    """The training env closing must not put the world back in asynchronous mode while the evaluation env on the
    same server still drives; the last env to close restores it, even when removing its actors fails."""
    restored: list[carla_env.CarlaEnv] = []

    def lose_the_server(self: carla_env.CarlaEnv) -> None:
        raise RuntimeError("the server stopped answering")

    def restore(self: carla_env.CarlaEnv) -> None:
        restored.append(self)

    monkeypatch.setattr(carla_env.CarlaEnv, "_destroy_episode", lose_the_server)
    monkeypatch.setattr(carla_env.CarlaEnv, "_restore_settings", restore)
    port = free_port()

    def connected_env() -> carla_env.CarlaEnv:
        """A CarlaEnv as close() sees it after connecting (its client calls are patched out above)."""
        env = object.__new__(carla_env.CarlaEnv)
        env.host, env.port, env._server, env._client = "127.0.0.1", port, None, object()
        carla_env.join_server((env.host, port), env)
        return env

    training, evaluation = connected_env(), connected_env()
    with pytest.warns(UserWarning, match="could not clean up"):
        training.close()
    assert restored == []
    with pytest.warns(UserWarning, match="could not clean up"):
        evaluation.close()
    assert restored == [evaluation] and ("127.0.0.1", port) not in carla_env._SERVER_USERS


@pytest.mark.skipif(not HAS_CARLA, reason="needs the carla package (pip install 'robotrl[carla]')")
def test_a_port_that_never_answers_fails_within_the_connect_timeout():
    with socket.socket() as listener:  # accepts connections (kernel backlog) but never speaks CARLA's protocol
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(CarlaServerError, match="did not answer within 1 s"):
            envs.make("carla/Town01-v0", port=port, connect_timeout=1.0)
        assert time.monotonic() - start < 4.0


def test_server_process_starts_and_stops_its_process_group(tmp_path):
    pid_file = tmp_path / "pid"
    server = ServerProcess(f"sh -c 'echo $$ > {pid_file}; exec sleep 60'")
    server.start()
    try:
        deadline = time.monotonic() + 10.0
        while not (pid_file.exists() and pid_file.read_text().endswith("\n")) and time.monotonic() < deadline:
            time.sleep(0.05)  # the shell creates the file before it writes the pid: wait for the whole line
        assert server.running and int(pid_file.read_text()) == server.process.pid
    finally:
        server.stop()
    assert not server.running and server.process.returncode == -signal.SIGTERM
    with pytest.raises(CarlaServerError, match="could not run server_command"):
        ServerProcess("/nonexistent/CarlaUE4.sh -RenderOffScreen").start()


@pytest.mark.skipif(not HAS_CARLA, reason="needs the carla package (pip install 'robotrl[carla]')")
def test_a_server_command_that_never_serves_is_given_up_and_stopped(tmp_path):
    pid_file = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(CarlaServerError, match="ran, but no CARLA server answered"):
        envs.make("carla/Town01-v0", port=free_port(), connect_timeout=0.2, server_start_timeout=1.5,
                  server_command=f"sh -c 'echo $$ > {pid_file}; exec sleep 60'")
    assert time.monotonic() - start < 6.0
    with pytest.raises(ProcessLookupError):  # the env stopped the server it started
        os.kill(int(pid_file.read_text()), 0)


def test_bad_kwargs_and_cameras_are_rejected_before_connecting():
    with pytest.raises(TypeError, match=r"'progres_weight' -> did you mean 'progress_weight'"):
        envs.make("carla/Town01-v0", port=free_port(), progres_weight=2.0)
    with pytest.raises(ValueError, match="no cameras"):
        envs.make("carla/Town01-v0", port=free_port(), camera="front")


def test_training_without_a_server_is_a_clear_cli_error(tmp_path, capsys):
    from robotrl.cli import main

    port = free_port()
    code = main(["train", str(CONFIG), f"env.kwargs.port={port}", "--run-dir", str(tmp_path / "run"),
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected_error(port)[1] in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------------------------------
# live server


@pytest.fixture(scope="module")
def server() -> tuple[str, int]:
    """The configured server, or a skip saying why there is none."""
    if not HAS_CARLA:
        pytest.skip("the carla package is not installed (pip install 'robotrl[carla]')")
    try:
        socket.create_connection((HOST, PORT), timeout=1.0).close()
    except OSError as error:
        pytest.skip(f"no CARLA server at {HOST}:{PORT} ({error}); set ROBOTRL_CARLA_HOST/ROBOTRL_CARLA_PORT")
    return HOST, PORT


def make_live(server: tuple[str, int], **kwargs):
    host, port = server
    return envs.make("carla/Town01-v0", host=host, port=port, num_vehicles=5, route_length=60.0, seed=0, **kwargs)


def test_live_episode_reports_components_that_reproduce_the_reward(server):
    env = make_live(server, max_episode_steps=60)
    try:
        obs, info = env.reset()
        assert obs.shape == env.observation_space.shape and obs.dtype == np.float32
        assert info["route_length"] > 10.0
        completions = [info["route_completion"]]
        for _ in range(60):
            obs, reward, terminated, truncated, info = env.step(np.array([0.0, 0.6], dtype=np.float32))
            assert env.observation_space.contains(obs)
            assert reward == pytest.approx(combine_components(env.reward_spec, info["reward_components"]))
            assert isinstance(info["success"], bool)
            completions.append(info["route_completion"])
            if terminated or truncated:
                break
        assert completions == sorted(completions)
        assert completions[-1] > completions[0]  # throttle moves the car along its route
    finally:
        env.close()


def test_live_close_restores_async_mode_and_removes_our_actors(server):
    import carla

    env = make_live(server)
    env.reset()
    inner = env.unwrapped
    ours = [inner._ego.id, *inner._sensor_ids, *inner._vehicle_ids]
    env.close()
    client = carla.Client(*server)
    client.set_timeout(10.0)
    world = client.get_world()
    assert not world.get_settings().synchronous_mode
    alive = {actor.id for actor in world.get_actors()}
    assert not alive & set(ours)


def test_live_scale_mode_bev_observation_and_render(server):
    env = make_live(server, infractions="scale", bev_observation=True, width=64, height=48)
    try:
        obs, _ = env.reset()
        assert set(obs) == {"state", "bev"} and obs["bev"].shape == (48, 64, 3)
        assert "infraction_discount" in [c.name for c in env.reward_spec]
        obs, reward, *_, info = env.step(env.action_space.sample())
        assert reward == pytest.approx(combine_components(env.reward_spec, info["reward_components"]))
        assert env.render().shape == (48, 64, 3)
    finally:
        env.close()



def test_live_envs_sharing_a_server_take_turns(server):
    first, second = make_live(server), make_live(server)
    try:
        first.reset()
        first.step(np.zeros(2, dtype=np.float32))
        second.reset()  # the trainer's evaluation env does this between training steps
        *_, truncated, info = first.step(np.zeros(2, dtype=np.float32))
        assert truncated and info["termination"] == "suspended"
        assert all(value == 0.0 for value in info["reward_components"].values())
        assert first.unwrapped._ego is None and second.unwrapped._ego is not None
        first.reset()
        assert second.step(np.zeros(2, dtype=np.float32))[4]["termination"] == "suspended"
    finally:
        first.close()
        second.close()

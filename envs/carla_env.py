"""CARLA driving behind the gymnasium API: `carla/Town01-v0` and friends, talking to a CARLA 0.9.16 server you run.

The env connects to a running server (``host``, ``port``; it never starts one unless given ``server_command``),
switches the world to synchronous mode with a fixed step (``delta_seconds``), spawns the ego car at a random spawn
point, ``num_vehicles`` Traffic Manager cars, a collision and a lane-invasion sensor, and plans a route of
``route_length`` m. Routes come from CARLA's GlobalRoutePlanner when its PythonAPI ``agents`` package is importable
(it is not in the ``carla`` wheel: put ``<CARLA_ROOT>/PythonAPI/carla`` on PYTHONPATH and install networkx);
otherwise the env follows the map's lane waypoints from the spawn point, taking a random branch at each junction.

Action: (steer, throttle_brake) in [-1, 1]^2; a positive second entry is throttle, a negative one brake. Observation:
the flat float32 vector of `envs.carla_logic.ObservationLayout`; with ``bev_observation=True`` a dict of that vector
("state") and an ego-centred bird's-eye view ("bev", uint8 HxWx3). `render()` returns the same bird's-eye view; it is
drawn from the simulator state, so no camera sensor is used (camera images are not implemented) and a server started
with ``-nullrhi`` works. Reward, infractions and components: `envs.carla_logic.DrivingReward`.

Several envs of one process may share a server (the trainer's evaluation env shares the training env's): they take
turns, the env that resets or steps removing the previous one's actors, whose episode then ends truncated; the last
of them to close gives the world back its asynchronous settings. Parallel envs need one server each (different
ports), so `envs.make_vec` refuses more than one env of a CARLA id (see `SINGLE_ENV_REASON`).

Without the ``carla`` package, making the env raises `CarlaNotInstalledError` (install ``robotrl[carla]``); without a
server it raises `CarlaServerError` within about ``connect_timeout`` seconds, saying how to start one. When the server
stops answering mid-run the env reconnects (restarting the server if it started it), truncates the episode, and goes
on; every actor it spawned is destroyed and the world's asynchronous settings restored on close and on errors.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec as GymEnvSpec

from envs import carla_logic as logic
from envs.components import RewardTerms
from envs.registry import register

INSTALL_HINT = "pip install 'robotrl[carla]'"
DEFAULT_MAX_EPISODE_STEPS = 1000
ROUTE_PLANNERS = ("auto", "global", "follow")
# The ids we register; town= overrides the id's town.
CARLA_TOWNS = {
    "Town01": "CARLA Town01: small town, two-lane roads and T-junctions",
    "Town02": "CARLA Town02: smaller town like Town01",
    "Town10HD": "CARLA Town10HD: downtown with multi-lane roads (the server's default map)",
}


SINGLE_ENV_REASON = (
    "Every env of a vector env gets the same host, port and tm_port, and CARLA envs sharing a server take turns "
    "(each one's step ends the other's episode), so parallel CARLA envs need one server each. Start one server per "
    "env on its own port (e.g. `./CarlaUE4.sh -RenderOffScreen -nullrhi -carla-rpc-port=2000`, then "
    "-carla-rpc-port=2002, ...: each server also uses the next port) and make one env per server with "
    "envs.make(env_id, port=P, tm_port=T), each with its own Traffic Manager port T; or use num_envs=1."
)

# The env currently driving on each (host, port), so that envs of one process sharing a server take turns.
_DRIVING: dict[tuple[str, int], weakref.ref] = {}
# Every open env of this process on each (host, port): the last one to close restores the world's settings.
_SERVER_USERS: dict[tuple[str, int], weakref.WeakSet] = {}


def join_server(key: tuple[str, int], env: Any) -> None:
    """Record that `env` uses the server `key` (host, port)."""
    _SERVER_USERS.setdefault(key, weakref.WeakSet()).add(env)


def leave_server(key: tuple[str, int], env: Any) -> bool:
    """Forget that `env` uses the server `key`; True if no other open env of this process still uses it."""
    users = _SERVER_USERS.get(key)
    if users is not None:
        users.discard(env)
        if not users:
            del _SERVER_USERS[key]
    return key not in _SERVER_USERS


class CarlaUnavailableError(ValueError):
    """CARLA cannot be used as configured (a user-fixable problem); the message says what to do."""


class CarlaNotInstalledError(CarlaUnavailableError, ImportError):
    """The `carla` client package is not installed."""


class CarlaServerError(CarlaUnavailableError, ConnectionError):
    """No CARLA server answers, or it stopped answering and did not come back."""


def import_carla() -> ModuleType:
    """The `carla` module, or CarlaNotInstalledError saying how to install it."""
    try:
        import carla
    except ImportError as error:
        raise CarlaNotInstalledError(
            f"The CARLA envs need the CARLA Python client, which is not installed: {INSTALL_HINT} "
            "(it pins carla==0.9.16; the server must be CARLA 0.9.16 too)."
        ) from error
    return carla


def start_hint(port: int) -> str:
    """How to get a server to talk to."""
    return (
        f"Start a CARLA 0.9.16 server, e.g. `./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}` in the CARLA "
        "folder (add -nullrhi to skip rendering: this env uses no cameras), or point the env at a running server "
        "with host=/port= (env.kwargs.host / env.kwargs.port in a config), or give server_command= to let the env "
        "start one."
    )


def probe_port(host: str, port: int, timeout: float) -> str | None:
    """None if something accepts TCP connections on host:port within `timeout` s, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as error:
        return error.strerror or str(error) or type(error).__name__


class ServerProcess:
    """A CARLA server the env starts itself from a shell-like command (and stops on close)."""

    def __init__(self, command: str) -> None:
        """Remember the command; nothing runs yet."""
        self.command = shlex.split(command)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Launch the server in its own process group (so stopping it also stops the UE4 child it spawns)."""
        self.stop()
        try:
            self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True)
        except OSError as error:
            raise CarlaServerError(f"could not run server_command {shlex.join(self.command)!r}: {error}") from None

    @property
    def running(self) -> bool:
        """Whether the server this object started is still running."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Terminate the server this object started (its process group), killing it after 10 s."""
        if not self.running:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass


class CarlaEnv(gym.Env):
    """One ego car driving a planned route in a CARLA town (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        *,
        town: str = "Town01",
        host: str = "127.0.0.1",
        port: int = 2000,
        timeout: float = 20.0,
        connect_timeout: float = 2.0,
        tm_port: int = 8000,
        delta_seconds: float = 0.1,
        no_rendering_mode: bool = True,
        num_vehicles: int = 20,
        ego_blueprint: str = "vehicle.lincoln.mkz_2020",
        route_length: float = 200.0,
        route_planner: str = "auto",
        max_route_distance: float = 15.0,
        goal_tolerance: float = 3.0,
        bev_observation: bool = False,
        width: int = 128,
        height: int = 128,
        meters_per_pixel: float = 0.5,
        server_command: str | None = None,
        server_start_timeout: float = 120.0,
        reconnect_timeout: float = 60.0,
        render_mode: str | None = "rgb_array",
        **options: Any,
    ) -> None:
        """Connect to the server and prepare the world; the first `reset` spawns the actors.

        `timeout`: seconds any server call may take (loading a town may take longer). `connect_timeout`: seconds to
        wait for a first answer before failing. `delta_seconds`: fixed simulation step. `no_rendering_mode`: skip
        the server's rendering (no sensor here needs it). `route_planner`: "global" (CARLA's GlobalRoutePlanner),
        "follow" (lane waypoints, random branch at junctions) or "auto" (global when importable). The episode ends
        (terminated) when the car is `max_route_distance` m from the route, or reaches the route's end (within
        `goal_tolerance` m: success). `width`/`height`/`meters_per_pixel`: the bird's-eye view. `server_command`:
        command that starts a server (e.g. "/opt/carla/CarlaUE4.sh -RenderOffScreen"), used when none answers.
        Other options: the fields of `DrivingRewardConfig` (weights, ``infractions``, penalty factors) and of
        `ObservationLayout` (``num_waypoints``, ``waypoint_spacing``, ``num_actors``, ``actor_radius``).
        """
        reward_options, layout_options, unknown = split_options(options)
        if unknown:
            raise TypeError(unknown_kwargs_message(unknown))
        if route_planner not in ROUTE_PLANNERS:
            raise ValueError(f"route_planner must be one of {ROUTE_PLANNERS}; got {route_planner!r}")
        if route_length <= 0 or delta_seconds <= 0 or num_vehicles < 0:
            raise ValueError("route_length and delta_seconds must be > 0 and num_vehicles >= 0")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None; got {render_mode!r}")
        self.reward_model = logic.DrivingReward(logic.DrivingRewardConfig(**reward_options))
        self.layout = logic.ObservationLayout(**layout_options)
        self.bev = logic.BirdsEyeView(height=height, width=width, meters_per_pixel=meters_per_pixel)
        self.town, self.host, self.port, self.tm_port = town, host, int(port), int(tm_port)
        self.timeout, self.connect_timeout = float(timeout), float(connect_timeout)
        self.delta_seconds, self.no_rendering_mode = float(delta_seconds), bool(no_rendering_mode)
        self.num_vehicles, self.ego_blueprint = int(num_vehicles), ego_blueprint
        self.route_length, self.route_planner = float(route_length), route_planner
        self.max_route_distance, self.goal_tolerance = float(max_route_distance), float(goal_tolerance)
        self.bev_observation, self.render_mode = bool(bev_observation), render_mode
        self.server_start_timeout, self.reconnect_timeout = float(server_start_timeout), float(reconnect_timeout)
        self.metadata = {**self.metadata, "render_fps": max(1, round(1.0 / self.delta_seconds))}
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        state_space = spaces.Box(-np.inf, np.inf, shape=(self.layout.size,), dtype=np.float32)
        if self.bev_observation:
            bev_space = spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8)
            self.observation_space = spaces.Dict({"state": state_space, "bev": bev_space})
        else:
            self.observation_space = state_space

        self._carla = import_carla()
        self._server = ServerProcess(server_command) if server_command else None
        self._client: Any = None
        self._world: Any = None
        self._map: Any = None
        self._tm: Any = None
        self._original_settings: Any = None
        self._global_planner: Any = None
        self._road = np.zeros((0, 3))
        self._ego: Any = None
        self._sensor_ids: list[int] = []
        self._vehicle_ids: list[int] = []
        self._others: dict[int, tuple[float, float, str]] = {}
        self._lock = threading.Lock()
        self._collisions: list[tuple[int, logic.Collision]] = []  # (frame, event), not yet scored
        self._lane_invasions: list[tuple[int, int]] = []  # (frame, 1) per crossing, not yet scored
        self._route: logic.Route | None = None
        self._tracker: logic.RouteTracker | None = None
        self._ego_state: logic.ActorState | None = None
        self._ego_location: Any = None
        self._actor_states: list[logic.ActorState] = []
        self._last_obs: Any = None
        self._previous_action = np.zeros(2)
        self._suspended = False
        join_server((self.host, self.port), self)
        try:
            self._connect(first=True)
        except RuntimeError as error:  # the server stopped answering while we set up the world
            self.close()
            raise CarlaServerError(f"The CARLA server at {self.host}:{self.port} stopped answering while the env set "
                                   f"up {self.town} ({error}). {start_hint(self.port)}") from None
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------------------------------------------------
    # connection

    def _connect(self, *, first: bool = False) -> None:
        """Reach the server (starting it if configured and nothing listens), load the town, go synchronous.

        The first connection tries once (failing within about `connect_timeout` s); reconnections wait up to
        `reconnect_timeout` s, and a server started here gets `server_start_timeout` s to come up.
        """
        deadline = None if first else time.monotonic() + self.reconnect_timeout
        if self._server is not None and probe_port(self.host, self.port, self.connect_timeout) is not None:
            self._server.start()
            try:
                client = self._answering_client(time.monotonic() + self.server_start_timeout)
            except CarlaServerError as error:
                raise CarlaServerError(
                    f"server_command {shlex.join(self._server.command)!r} ran, but no CARLA server answered at "
                    f"{self.host}:{self.port} within server_start_timeout={self.server_start_timeout:g} s (run the "
                    f"command by hand to see why; is -carla-rpc-port={self.port} in it?). {error}") from None
        else:
            client = self._answering_client(deadline)
        server_version, client_version = client.get_server_version(), client.get_client_version()
        if server_version != client_version:
            warnings.warn(f"CARLA server {server_version} and client {client_version} differ; use matching versions",
                          stacklevel=2)
        client.set_timeout(max(self.timeout, 120.0))  # loading a town takes a while
        world = client.get_world()
        town_map = world.get_map()
        if town_map.name.split("/")[-1] != self.town:
            towns = sorted(name.split("/")[-1] for name in client.get_available_maps())
            if self.town not in towns:
                raise CarlaUnavailableError(f"the CARLA server has no town {self.town!r}; it has {towns}")
            world = client.load_world(self.town)
            town_map = world.get_map()
        client.set_timeout(self.timeout)
        self._client, self._world, self._map = client, world, town_map
        if self._original_settings is None:  # what close() restores (a reconnection finds our own settings)
            shared = [env._original_settings for env in _SERVER_USERS.get((self.host, self.port), ())
                      if env is not self and env._original_settings is not None]
            self._original_settings = shared[0] if shared else world.get_settings()  # not a sharing env's sync mode
        settings = world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = self.delta_seconds
        settings.no_rendering_mode = self.no_rendering_mode
        world.apply_settings(settings)
        self._tm = client.get_trafficmanager(self.tm_port)
        self._tm.set_synchronous_mode(True)
        self._road = np.array([(w.transform.location.x, w.transform.location.y, w.lane_width)
                               for w in self._map.generate_waypoints(2.0)], dtype=np.float64).reshape(-1, 3)
        self._global_planner = self._make_global_planner()

    def _answering_client(self, deadline: float | None) -> Any:
        """A client whose server answered; without a deadline, one try of about `connect_timeout` seconds."""
        while True:
            client, reason = self._try_client()
            if client is not None:
                return client
            if deadline is None or time.monotonic() > deadline:
                waited = "" if deadline is None else " in time"
                raise CarlaServerError(f"No CARLA server answers at {self.host}:{self.port}{waited} ({reason}). "
                                       f"{start_hint(self.port)}")
            time.sleep(1.0)

    def _try_client(self) -> tuple[Any, str]:
        """(client, "") if the server answers within about `connect_timeout` s, else (None, why not)."""
        reason = probe_port(self.host, self.port, self.connect_timeout)
        if reason is not None:
            return None, reason
        client = self._carla.Client(self.host, self.port)
        client.set_timeout(self.connect_timeout)
        try:
            client.get_server_version()
        except RuntimeError:
            return None, f"it accepts connections but did not answer within {self.connect_timeout:g} s"
        return client, ""

    def _make_global_planner(self) -> Any:
        """CARLA's GlobalRoutePlanner for this map, or None (route_planner "follow", or "auto" without `agents`)."""
        if self.route_planner == "follow":
            return None
        try:
            from agents.navigation.global_route_planner import GlobalRoutePlanner
        except ImportError as error:
            if self.route_planner == "global":
                raise CarlaUnavailableError(
                    "route_planner='global' needs CARLA's PythonAPI `agents` package (not in the carla wheel): put "
                    f"<CARLA_ROOT>/PythonAPI/carla on PYTHONPATH and pip install networkx ({error})"
                ) from None
            return None
        return GlobalRoutePlanner(self._map, 2.0)

    def _recover(self, error: Exception) -> None:
        """The server stopped answering: restart it if we started it, reconnect, or raise CarlaServerError."""
        stale = [*self._sensor_ids, *self._vehicle_ids, *([self._ego.id] if self._ego is not None else [])]
        self._forget_episode()
        self._client = self._world = self._map = self._tm = None
        if self._server is not None and self._server.running and self._try_client()[0] is None:
            self._server.stop()  # ours and hung: start it afresh
        try:
            self._connect()
        except (CarlaServerError, RuntimeError) as failure:
            raise CarlaServerError(f"The CARLA server at {self.host}:{self.port} stopped answering ({error}) and "
                                   f"did not come back within the reconnect_timeout: {failure}") from None
        self._destroy(stale)  # a server that merely stalled still has them

    # ----------------------------------------------------------------------------------------------------------------
    # episodes

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Respawn the ego car, traffic and sensors and plan a new route; reconnects once if the server is gone."""
        super().reset(seed=seed)
        if self._client is None:  # an earlier reconnection failed
            self._connect()
        self._take_turn()
        self._suspended = False
        try:
            return self._start_episode()
        except RuntimeError as error:  # carla raises RuntimeError when the server does not answer
            self._recover(error)
            return self._start_episode()

    def _start_episode(self) -> tuple[Any, dict[str, Any]]:
        """Spawn everything for a new episode (cleaning up what was spawned if that fails)."""
        carla, world = self._carla, self._world
        self._destroy_episode()
        rng = self.np_random
        try:
            self._tm.set_random_device_seed(int(rng.integers(2**31 - 1)))
            spawn_points = self._map.get_spawn_points()
            free = [spawn_points[int(i)] for i in rng.permutation(len(spawn_points))]
            library = world.get_blueprint_library()
            ego_blueprint = library.find(self.ego_blueprint)
            ego_blueprint.set_attribute("role_name", "hero")
            while free and self._ego is None:
                self._ego = world.try_spawn_actor(ego_blueprint, free.pop(0))
            if self._ego is None:
                raise CarlaUnavailableError(f"no free spawn point for the ego car in {self.town}")
            for name, callback in (("sensor.other.collision", self._on_collision),
                                   ("sensor.other.lane_invasion", self._on_lane_invasion)):
                sensor = world.spawn_actor(library.find(name), carla.Transform(), attach_to=self._ego)
                self._sensor_ids.append(sensor.id)
                sensor.listen(callback)
            self._spawn_traffic(library, free, rng)
            frame = world.tick(self.timeout)
            self._route = self._plan_route(self._ego.get_location(), spawn_points, rng)
            self._others = {
                actor.id: (2.0 * actor.bounding_box.extent.x, 2.0 * actor.bounding_box.extent.y,
                           logic.collision_kind(actor.type_id))
                for pattern in ("vehicle.*", "walker.pedestrian.*")
                for actor in world.get_actors().filter(pattern) if actor.id != self._ego.id
            }
            self._read_state()
        except BaseException:
            self._destroy_episode()
            raise
        self._drain_events(frame)  # what happened while spawning does not count
        self._tracker = logic.RouteTracker(self._route, ahead=max(30.0, 60.0 * self.delta_seconds))
        projection = self._tracker.reset(self._ego_state.x, self._ego_state.y)
        self.reward_model.reset()
        self._previous_action = np.zeros(2)
        self._last_obs = self._observe(projection)
        return self._last_obs, {"route_length": self._route.length, "route_completion": self._tracker.completion}

    def _spawn_traffic(self, library: Any, spawn_points: list[Any], rng: np.random.Generator) -> None:
        """Spawn up to `num_vehicles` four-wheeled cars on autopilot under our Traffic Manager (one batch)."""
        if self.num_vehicles <= 0 or not spawn_points:
            return
        command = self._carla.command
        blueprints = [bp for bp in library.filter("vehicle.*")
                      if not bp.has_attribute("number_of_wheels") or bp.get_attribute("number_of_wheels").as_int() == 4]
        batch = []
        for transform in spawn_points[: self.num_vehicles]:
            blueprint = blueprints[int(rng.integers(len(blueprints)))]
            blueprint.set_attribute("role_name", "autopilot")
            batch.append(command.SpawnActor(blueprint, transform).then(
                command.SetAutopilot(command.FutureActor, True, self.tm_port)))
        responses = self._client.apply_batch_sync(batch, False)
        self._vehicle_ids += [response.actor_id for response in responses if not response.has_error()]

    def _plan_route(self, start: Any, spawn_points: list[Any], rng: np.random.Generator) -> logic.Route:
        """A route of about `route_length` m from the ego car (see the module docstring)."""
        if self._global_planner is not None:
            longest: logic.Route | None = None
            for index in rng.permutation(len(spawn_points))[:10]:
                trace = self._global_planner.trace_route(start, spawn_points[int(index)].location)
                points = [(w.transform.location.x, w.transform.location.y) for w, _ in trace]
                if len(points) < 2:
                    continue
                route = logic.Route(points)
                if route.length >= self.route_length:
                    return route.truncated(self.route_length)
                if longest is None or route.length > longest.length:
                    longest = route
            if longest is not None:
                return longest
        waypoint = self._map.get_waypoint(start)
        points = [(waypoint.transform.location.x, waypoint.transform.location.y)]
        travelled = 0.0
        while travelled < self.route_length:
            branches = waypoint.next(2.0)
            if not branches:
                break
            waypoint = branches[int(rng.integers(len(branches)))]
            location = waypoint.transform.location
            travelled += math.dist(points[-1], (location.x, location.y))
            points.append((location.x, location.y))
        return logic.Route(points)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Apply (steer, throttle_brake), advance one fixed step, and score it."""
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        if self._suspended:  # another env of this process drove on our server: this episode is gone
            return self._interrupted("suspended")
        if self._ego is None:
            raise RuntimeError("call reset() before step(): the episode has no ego car")
        self._take_turn()
        try:
            frame = self._advance(action)
        except RuntimeError as error:  # the server stopped answering: reconnect and truncate the episode
            self._recover(error)
            return self._interrupted("server_reconnected")
        collisions, lane_invasions = self._drain_events(frame)
        off_road = self._map.get_waypoint(self._ego_location, project_to_road=False,
                                          lane_type=self._carla.LaneType.Driving) is None
        events = logic.StepEvents(collisions=collisions, lane_invasions=lane_invasions, off_road=off_road)
        projection, gained = self._tracker.update(self._ego_state.x, self._ego_state.y)
        result = self.reward_model.step(gained, events, action)
        completed = self._tracker.remaining() <= self.goal_tolerance
        ending = result.terminal_infraction
        if ending is None and projection.distance > self.max_route_distance:
            ending = "route_deviation"
        if ending is None and completed:
            ending = "route_completed"
        self._previous_action = action
        self._last_obs = self._observe(projection)
        info = {"carla_reward_values": result.values, "route_completion": self._tracker.completion,
                "route_completed": completed, "distance_to_route": projection.distance,
                "penalty_factor": result.penalty_factor, "infractions": result.counted_infractions,
                "termination": ending}
        return self._last_obs, result.reward, ending is not None, False, info

    def _interrupted(self, reason: str) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """A truncated step with zero reward: the episode cannot go on (see `reason`); reset starts a new one."""
        zeros = tuple(0.0 for _ in self.reward_model.spec)
        return self._last_obs, 0.0, False, True, {"carla_reward_values": zeros, "route_completed": False,
                                                  "termination": reason}

    def _take_turn(self) -> None:
        """Envs of one process may share a server (the trainer's evaluation env does): the env that drives suspends
        the one that drove before, whose actors go and whose episode ends (truncated) at its next step."""
        key = (self.host, self.port)
        previous = _DRIVING.get(key)
        previous = previous() if previous is not None else None
        if previous is not None and previous is not self:
            previous._suspend()
        _DRIVING[key] = weakref.ref(self)

    def _suspend(self) -> None:
        """Remove this episode's actors so another env can drive; the next step reports the episode truncated."""
        self._suspended = True
        try:
            self._destroy_episode()
        except RuntimeError as error:
            warnings.warn(f"could not remove a suspended episode's actors from {self.host}:{self.port}: {error}",
                          stacklevel=2)

    def _advance(self, action: np.ndarray) -> int:
        """Send the control, tick the world, read the new state; returns the tick's frame."""
        steer, pedal = float(action[0]), float(action[1])
        control = self._carla.VehicleControl(throttle=max(pedal, 0.0), steer=steer, brake=max(-pedal, 0.0))
        self._ego.apply_control(control)
        frame = self._world.tick(self.timeout)
        self._read_state()
        return frame

    def _read_state(self) -> None:
        """Ego and other actors from one world snapshot."""
        snapshot = self._world.get_snapshot()
        ego = snapshot.find(self._ego.id)
        self._ego_location = ego.get_transform().location
        extent = self._ego.bounding_box.extent
        self._ego_state = actor_state(ego, 2.0 * extent.x, 2.0 * extent.y, "vehicle")
        self._actor_states = []
        for actor_id, (length, width, kind) in self._others.items():
            other = snapshot.find(actor_id)
            if other is not None:
                self._actor_states.append(actor_state(other, length, width, kind))

    def _observe(self, projection: Any) -> Any:
        """The observation for the current state."""
        state = self.layout.build(self._ego_state, self._route, projection, self._tracker.completion,
                                  self.reward_model.penalty_factor, self._previous_action, self._actor_states)
        if not self.bev_observation:
            return state
        return {"state": state, "bev": self._bird_view()}

    def _bird_view(self) -> np.ndarray:
        """The ego-centred bird's-eye view of the current state."""
        return self.bev.render(self._ego_state, self._route, self._actor_states, self._road)

    def render(self) -> np.ndarray | None:
        """The bird's-eye view (HxWx3 uint8) in rgb_array mode; a blank frame before the first reset."""
        if self.render_mode != "rgb_array":
            return None
        if self._ego_state is None:
            return np.zeros((self.bev.height, self.bev.width, 3), dtype=np.uint8)
        return self._bird_view()

    # ----------------------------------------------------------------------------------------------------------------
    # sensors

    def _on_collision(self, event: Any) -> None:
        """Collision sensor callback (runs on the client's thread)."""
        other = event.other_actor
        collision = logic.Collision(other.id if other is not None else 0,
                                    logic.collision_kind(other.type_id if other is not None else ""))
        with self._lock:
            self._collisions.append((event.frame, collision))

    def _on_lane_invasion(self, event: Any) -> None:
        """Lane-invasion sensor callback: one event per crossing."""
        with self._lock:
            self._lane_invasions.append((event.frame, 1))

    def _drain_events(self, frame: int) -> tuple[tuple[logic.Collision, ...], int]:
        """Sensor events of the frames up to `frame` (the last tick's); later ones wait for the next step."""
        with self._lock:
            collisions, self._collisions = logic.split_at_frame(self._collisions, frame)
            lane_invasions, self._lane_invasions = logic.split_at_frame(self._lane_invasions, frame)
        return tuple(collisions), sum(lane_invasions)

    # ----------------------------------------------------------------------------------------------------------------
    # clean-up

    def _destroy(self, actor_ids: list[int]) -> None:
        """Destroy actors by id in one batch (ids the server no longer knows are ignored)."""
        if actor_ids and self._client is not None:
            self._client.apply_batch_sync([self._carla.command.DestroyActor(i) for i in actor_ids], False)

    def _forget_episode(self) -> None:
        """Drop the references to this episode's actors."""
        self._ego, self._sensor_ids, self._vehicle_ids, self._others = None, [], [], {}

    def _destroy_episode(self) -> None:
        """Stop the sensors and destroy every actor spawned for the current episode (sensors first)."""
        if self._client is None:
            return
        for sensor_id in self._sensor_ids:
            sensor = self._world.get_actor(sensor_id)
            if sensor is not None:
                sensor.stop()
        ego = [self._ego.id] if self._ego is not None else []
        ids = [*self._sensor_ids, *self._vehicle_ids, *ego]
        self._forget_episode()
        self._destroy(ids)

    def close(self) -> None:
        """Destroy our actors; if no other env of this process uses the server, give the world back its
        asynchronous settings; stop a server we started."""
        key = (self.host, self.port)
        last = leave_server(key, self)
        try:
            if self._client is not None:
                try:
                    self._destroy_episode()
                finally:
                    if last:
                        self._restore_settings()
        except RuntimeError as error:
            warnings.warn(f"could not clean up the CARLA world at {self.host}:{self.port}: {error}", stacklevel=2)
        finally:
            self._client = self._world = self._map = self._tm = None
            driving = _DRIVING.get(key)
            if driving is not None and driving() is self:
                del _DRIVING[key]
            if self._server is not None:
                self._server.stop()

    def _restore_settings(self) -> None:
        """Put the Traffic Manager and the world back in asynchronous mode, with the world's original settings."""
        if self._tm is not None:
            self._tm.set_synchronous_mode(False)
        if self._original_settings is not None:
            self._original_settings.synchronous_mode = False
            self._world.apply_settings(self._original_settings)


def actor_state(snapshot: Any, length: float, width: float, kind: str) -> logic.ActorState:
    """An ActorState from a carla ActorSnapshot (yaw from degrees to radians)."""
    transform, velocity = snapshot.get_transform(), snapshot.get_velocity()
    return logic.ActorState(x=transform.location.x, y=transform.location.y, yaw=math.radians(transform.rotation.yaw),
                      vx=velocity.x, vy=velocity.y, length=length, width=width, kind=kind)


def _accepted_kwargs() -> list[str]:
    """Every keyword `CarlaEnv` takes (its own parameters plus the reward and observation options)."""
    own = [name for name, p in inspect.signature(CarlaEnv.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY]
    options = [f.name for config in (logic.DrivingRewardConfig, logic.ObservationLayout) for f in fields(config)]
    return sorted({*own, *options})


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Options for DrivingRewardConfig, for ObservationLayout, and the names that fit neither."""
    reward_names = {f.name for f in fields(logic.DrivingRewardConfig)}
    layout_names = {f.name for f in fields(logic.ObservationLayout)}
    reward = {k: v for k, v in options.items() if k in reward_names}
    layout = {k: v for k, v in options.items() if k in layout_names}
    return reward, layout, sorted(set(options) - reward_names - layout_names)


def unknown_kwargs_message(unknown: list[str]) -> str:
    """Name the rejected kwargs with near misses and list the accepted ones."""
    accepted = [name for name in _accepted_kwargs() if name not in ("render_mode", "width", "height")]  # make's own
    hints = [f"{name!r} -> did you mean {close[0]!r}?" for name in unknown
             if (close := difflib.get_close_matches(name, accepted, n=1, cutoff=0.6))]
    return (f"the CARLA env does not accept keyword argument(s) {', '.join(map(repr, unknown))}"
            f"{' (' + '; '.join(hints) + ')' if hints else ''}. Accepted: {', '.join(accepted)}.")


@dataclass(frozen=True)
class CarlaConstructor:
    """Builds `CarlaEnv` through gymnasium (so it has a spec and a time limit); kwargs are checked before connecting."""

    env_id: str
    town: str

    def __call__(self, *, render_mode: str | None, width: int | None, height: int | None, camera: str | int | None,
                 max_episode_steps: int | None, **kwargs: Any) -> gym.Env:
        """Check the kwargs, then connect (failing fast with a how-to when there is no package or no server)."""
        if camera is not None:
            raise ValueError(f"{self.env_id} has no cameras: its frames are a bird's-eye view drawn from the "
                             f"simulator state; got camera={camera!r}")
        unknown = sorted(set(kwargs) - set(_accepted_kwargs()))
        if unknown:
            raise TypeError(unknown_kwargs_message(unknown))
        env_kwargs = {"town": self.town, **kwargs}
        if width is not None:
            env_kwargs["width"] = width
        if height is not None:
            env_kwargs["height"] = height
        spec = GymEnvSpec(id=self.env_id, entry_point="envs.carla_env:CarlaEnv", kwargs=env_kwargs,
                          max_episode_steps=max_episode_steps or DEFAULT_MAX_EPISODE_STEPS, disable_env_checker=True)
        return gym.make(spec, render_mode=render_mode)


class CarlaTerms(RewardTerms):
    """The CARLA env's components come straight from its `DrivingReward` (see `envs.carla_logic`); success is
    reaching the route's end."""

    has_success = True

    def __init__(self, env: gym.Env) -> None:
        """The spec the env's reward model declares (it depends on the weights and the infraction mode)."""
        super().__init__(env)
        self.spec = self.unwrapped.reward_model.spec

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        """The values the env computed its reward from."""
        return list(info["carla_reward_values"])

    def success(self, values: list[float], terminated: bool, info: dict[str, Any]) -> bool:
        """Reached the end of the route."""
        return bool(info["route_completed"])


def register_carla_envs() -> None:
    """Register ``carla/<Town>-v0`` for each town in CARLA_TOWNS (imports nothing from carla)."""
    for town, description in CARLA_TOWNS.items():
        env_id = f"carla/{town}-v0"
        register(env_id, CarlaConstructor(env_id, town), CarlaTerms, family="driving", description=description,
                 single_env_reason=SINGLE_ENV_REASON, overwrite=True)

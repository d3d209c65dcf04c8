"""The CARLA env's driving logic on plain numbers: route progress, reward components, infractions, observations, BEV.

Nothing here imports `carla`: `envs.carla_env` turns simulator state into these inputs, so all of it is unit-tested on
hand-made states without a server. Conventions: positions in metres and yaw in radians in CARLA's world frame
(forward vector ``(cos yaw, sin yaw)``); the ego frame has x forward and y along the forward vector turned by +90 deg
of yaw, which is the car's right in CARLA's left-handed frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from envs.components import RewardComponent, RewardSpec, combine_components

INFRACTION_MODES = ("terminate", "scale")
COLLISION_KINDS = ("pedestrian", "vehicle", "static")
# The CARLA Leaderboard's driving-score factor per collision (pedestrian 0.5, vehicle 0.6, static layout 0.65): the
# multiplicative infraction penalties CaRL scales its route-completion reward with.
LEADERBOARD_COLLISION_FACTORS: Mapping[str, float] = {"pedestrian": 0.5, "vehicle": 0.6, "static": 0.65}


def wrap_angle(angle: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


@dataclass(frozen=True)
class ActorState:
    """A car (the ego or another) or a walker on the ground plane, in the world frame.

    `length`/`width` (m) are the footprint drawn in the bird's-eye view; `kind` is "vehicle" or "pedestrian".
    """

    x: float
    y: float
    yaw: float = 0.0
    vx: float = 0.0
    vy: float = 0.0
    length: float = 4.8
    width: float = 2.0
    kind: str = "vehicle"


def to_ego_frame(ego: ActorState, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """World points (or vectors, if `ego` sits at the origin) as (forward, lateral) coordinates of the ego car."""
    dx, dy = np.asarray(x, dtype=np.float64) - ego.x, np.asarray(y, dtype=np.float64) - ego.y
    cos, sin = math.cos(ego.yaw), math.sin(ego.yaw)
    return dx * cos + dy * sin, -dx * sin + dy * cos


def rotate_to_ego(ego: ActorState, vx: np.ndarray | float, vy: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """World vectors (velocities) in the ego car's (forward, lateral) axes."""
    vx, vy = np.asarray(vx, dtype=np.float64), np.asarray(vy, dtype=np.float64)
    cos, sin = math.cos(ego.yaw), math.sin(ego.yaw)
    return vx * cos + vy * sin, -vx * sin + vy * cos


# --------------------------------------------------------------------------------------------------------------------
# Route progress


@dataclass(frozen=True)
class RouteProjection:
    """Where a point projects onto a route: arc length `s` (m), distance to the route (m), signed `lateral` offset
    (m, positive on the route's +90 deg side, i.e. its right in CARLA) and the route's `heading` there (rad)."""

    s: float
    distance: float
    lateral: float
    heading: float


class Route:
    """A route as a polyline of (x, y) points (m); consecutive duplicates are dropped."""

    def __init__(self, points: Sequence[Sequence[float]] | np.ndarray) -> None:
        """Validate the points (at least two distinct ones) and precompute the segments and their arc lengths."""
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] < 2:
            raise ValueError(f"route points must have shape (n, 2); got {pts.shape}")
        pts = pts[:, :2]
        keep = np.concatenate([[True], np.any(np.diff(pts, axis=0) != 0.0, axis=1)])
        pts = pts[keep]
        if len(pts) < 2:
            raise ValueError("a route needs at least two distinct points")
        self.points = pts
        self._starts = pts[:-1]
        self._vectors = np.diff(pts, axis=0)
        self._lengths = np.hypot(self._vectors[:, 0], self._vectors[:, 1])
        self._headings = np.arctan2(self._vectors[:, 1], self._vectors[:, 0])
        self.cumulative = np.concatenate([[0.0], np.cumsum(self._lengths)])
        self.length = float(self.cumulative[-1])

    def project(self, x: float, y: float, *, near: float | None = None, behind: float = 10.0,
                ahead: float = 30.0) -> RouteProjection:
        """Closest point of the route to (x, y); with `near` (an arc length), only the part from `near - behind` to
        `near + ahead` is searched, so that a route passing the same place twice is followed in order."""
        first, stop = 0, len(self._lengths)
        if near is not None:
            first = int(np.searchsorted(self.cumulative[1:], near - behind, side="left"))
            stop = int(np.searchsorted(self.cumulative[:-1], near + ahead, side="right"))
            first = min(first, len(self._lengths) - 1)
            stop = max(stop, first + 1)
        starts, vectors = self._starts[first:stop], self._vectors[first:stop]
        lengths = self._lengths[first:stop]
        t = ((x - starts[:, 0]) * vectors[:, 0] + (y - starts[:, 1]) * vectors[:, 1]) / np.square(lengths)
        t = np.clip(t, 0.0, 1.0)
        closest_x, closest_y = starts[:, 0] + t * vectors[:, 0], starts[:, 1] + t * vectors[:, 1]
        squared = np.square(x - closest_x) + np.square(y - closest_y)
        best = int(np.argmin(squared))
        segment = first + best
        heading = float(self._headings[segment])
        lateral = -(x - closest_x[best]) * math.sin(heading) + (y - closest_y[best]) * math.cos(heading)
        s = float(self.cumulative[segment] + t[best] * self._lengths[segment])
        return RouteProjection(s=s, distance=math.sqrt(float(squared[best])), lateral=float(lateral), heading=heading)

    def truncated(self, length: float) -> Route:
        """The route's first `length` m (itself if it is not longer)."""
        if length >= self.length:
            return self
        keep = self.cumulative < length
        return Route(np.vstack([self.points[keep], self.point_at(length)[None]]))

    def point_at(self, s: np.ndarray | float) -> np.ndarray:
        """Points at arc lengths `s` (clipped to the route), shape ``s.shape + (2,)``."""
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, self.length)
        segment = np.clip(np.searchsorted(self.cumulative, s, side="right") - 1, 0, len(self._lengths) - 1)
        t = (s - self.cumulative[segment]) / self._lengths[segment]
        return self._starts[segment] + t[..., None] * self._vectors[segment]


class RouteTracker:
    """Follows the ego car along a route and keeps the furthest arc length reached, so each metre of progress is paid
    once (driving back and forth earns nothing) and route completion never decreases."""

    def __init__(self, route: Route, *, behind: float = 10.0, ahead: float = 30.0) -> None:
        """`behind`/`ahead`: the window (m) around the furthest progress searched each step; `ahead` must exceed the
        distance a car can drive in one step."""
        self.route = route
        self.behind = behind
        self.ahead = ahead
        self.progress = 0.0

    def reset(self, x: float, y: float) -> RouteProjection:
        """Start an episode at (x, y): progress starts where the car projects onto the whole route."""
        projection = self.route.project(x, y)
        self.progress = projection.s
        return projection

    def update(self, x: float, y: float) -> tuple[RouteProjection, float]:
        """Project the car's new position; return the projection and the new progress (m, >= 0) of this step."""
        projection = self.route.project(x, y, near=self.progress, behind=self.behind, ahead=self.ahead)
        gained = max(0.0, projection.s - self.progress)
        self.progress += gained
        return projection, gained

    @property
    def completion(self) -> float:
        """Fraction of the route's length reached so far, in [0, 1]."""
        return self.progress / self.route.length

    def remaining(self) -> float:
        """Route length (m) not yet reached."""
        return self.route.length - self.progress


# --------------------------------------------------------------------------------------------------------------------
# Reward components and infractions


def collision_kind(type_id: str) -> str:
    """The collision category of a CARLA blueprint id: "vehicle.*", "walker.*" (pedestrian), anything else static."""
    if type_id.startswith("vehicle."):
        return "vehicle"
    if type_id.startswith("walker."):
        return "pedestrian"
    return "static"


@dataclass(frozen=True)
class Collision:
    """One collision event of a step: the other actor's id and its kind (pedestrian, vehicle or static)."""

    other_id: int
    kind: str


def split_at_frame(events: Sequence[tuple[int, Any]], frame: int) -> tuple[list[Any], list[tuple[int, Any]]]:
    """Sensor events as (frame, event): those of frames up to `frame` (the tick that ended the step) and, in their
    order, the later ones (a callback may run after the tick returns: they belong to the next step)."""
    now = [event for event_frame, event in events if event_frame <= frame]
    later = [(event_frame, event) for event_frame, event in events if event_frame > frame]
    return now, later


@dataclass(frozen=True)
class StepEvents:
    """What the sensors and the map report for one step."""

    collisions: tuple[Collision, ...] = ()
    lane_invasions: int = 0  # lane markings crossed during the step (CARLA's lane-invasion sensor)
    off_road: bool = False  # the car's centre is outside every driving lane after the step


@dataclass(frozen=True)
class DrivingRewardConfig:
    """Weights of the reward components and how infractions (collision, off-road) are handled.

    `infractions`: "terminate" ends the episode on a collision or on going off-road (CaRL's hard penalties);
    "scale" keeps driving but multiplies the progress reward from then on by a penalty factor per infraction, as
    CaRL scales route completion (and the CARLA Leaderboard its driving score): `collision_factors` per kind
    (default: the Leaderboard's 0.5 / 0.6 / 0.65) and `off_road_factor` (ours; the Leaderboard instead deducts the
    share of the route driven outside lanes). Either way the components below keep their own weights.
    """

    infractions: str = "terminate"
    progress_weight: float = 1.0
    collision_weight: float = 5.0
    off_road_weight: float = 1.0
    lane_invasion_weight: float = 0.2
    action_change_weight: float = 0.05
    collision_factors: Mapping[str, float] = field(default_factory=lambda: dict(LEADERBOARD_COLLISION_FACTORS))
    off_road_factor: float = 0.7

    def __post_init__(self) -> None:
        """Reject an unknown mode, negative weights and factors outside (0, 1]."""
        if self.infractions not in INFRACTION_MODES:
            raise ValueError(f"infractions must be one of {INFRACTION_MODES}; got {self.infractions!r}")
        for name in ("progress_weight", "collision_weight", "off_road_weight", "lane_invasion_weight",
                     "action_change_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (the direction is part of the component); got "
                                 f"{getattr(self, name)}")
        if set(self.collision_factors) != set(COLLISION_KINDS):
            raise ValueError(f"collision_factors needs exactly the kinds {COLLISION_KINDS}; got "
                             f"{sorted(self.collision_factors)}")
        for name, factor in [*self.collision_factors.items(), ("off_road", self.off_road_factor)]:
            if not 0.0 < factor <= 1.0:
                raise ValueError(f"penalty factor for {name} must be in (0, 1]; got {factor}")


@dataclass(frozen=True)
class RewardStep:
    """One step's reward: raw component values (spec order), the reward they combine to, the penalty factor after
    the step, the infraction that ends the episode (terminate mode) and the infractions counted (scale mode)."""

    values: tuple[float, ...]
    reward: float
    penalty_factor: float
    terminal_infraction: str | None
    counted_infractions: tuple[str, ...]


class DrivingReward:
    """The reward of the CARLA env as declared components; the env reward is exactly their weighted sum.

    In scale mode the scaled progress ``progress * penalty_factor`` is written as two linear components,
    ``route_progress`` (maximize) minus ``infraction_discount = progress * (1 - penalty_factor)`` (minimize), both
    with the progress weight. An infraction is counted when it starts (a collision with an actor not touched in the
    previous step; leaving the road), and it discounts the progress of its own step already.
    """

    def __init__(self, config: DrivingRewardConfig | None = None) -> None:
        """Build the spec from the config and start an episode."""
        self.config = config or DrivingRewardConfig()
        self.spec: RewardSpec = self._build_spec()
        self.reset()

    def _build_spec(self) -> RewardSpec:
        """The declared components; the discount term only exists in scale mode."""
        c = self.config
        spec = [RewardComponent("route_progress", c.progress_weight, "maximize",
                                "metres of new progress along the route in the step (furthest point reached)")]
        if c.infractions == "scale":
            spec.append(RewardComponent(
                "infraction_discount", c.progress_weight, "minimize",
                "route_progress * (1 - penalty factor): the progress withheld for the episode's infractions so far"))
        spec += [
            RewardComponent("collision", c.collision_weight, "minimize", "1.0 if the car touched anything in the step"),
            RewardComponent("off_road", c.off_road_weight, "minimize",
                            "1.0 if the car's centre is outside every driving lane after the step"),
            RewardComponent("lane_invasion", c.lane_invasion_weight, "minimize",
                            "1.0 if the car crossed a lane marking in the step"),
            RewardComponent("action_change", c.action_change_weight, "minimize",
                            "squared change of the action (steer, throttle/brake) from the previous step; 0 first"),
        ]
        return tuple(spec)

    def reset(self) -> None:
        """Start a new episode: no infractions, no previous action."""
        self.penalty_factor = 1.0
        self._touching: frozenset[int] = frozenset()
        self._was_off_road = False
        self._previous_action: np.ndarray | None = None

    def step(self, progress: float, events: StepEvents, action: Sequence[float] | np.ndarray) -> RewardStep:
        """Components and reward of one step, given the new route progress (m), the step's events and the action."""
        c = self.config
        action = np.asarray(action, dtype=np.float64)
        counted: list[str] = []
        if c.infractions == "scale":
            for collision in events.collisions:
                if collision.other_id not in self._touching:
                    self.penalty_factor *= c.collision_factors[collision.kind]
                    counted.append(f"collision_{collision.kind}")
            if events.off_road and not self._was_off_road:
                self.penalty_factor *= c.off_road_factor
                counted.append("off_road")
        self._touching = frozenset(collision.other_id for collision in events.collisions)
        self._was_off_road = events.off_road
        terminal = None
        if c.infractions == "terminate":
            terminal = "collision" if events.collisions else "off_road" if events.off_road else None
        change = 0.0 if self._previous_action is None else float(np.sum(np.square(action - self._previous_action)))
        self._previous_action = action
        progress = max(0.0, float(progress))
        values = [progress]
        if c.infractions == "scale":
            values.append(progress * (1.0 - self.penalty_factor))
        values += [float(bool(events.collisions)), float(events.off_road), float(events.lane_invasions > 0), change]
        reward = float(combine_components(self.spec, values))
        return RewardStep(tuple(values), reward, self.penalty_factor, terminal, tuple(counted))


# --------------------------------------------------------------------------------------------------------------------
# Observations


EGO_FEATURES = ("forward_speed", "lateral_speed", "heading_error_sin", "heading_error_cos", "lateral_offset",
                "route_completion", "penalty_factor", "previous_steer", "previous_throttle_brake")
ACTOR_FEATURES = ("present", "x", "y", "vx", "vy")


@dataclass(frozen=True)
class ObservationLayout:
    """The flat float32 observation: ego state, the route ahead, and the nearest actors (zero-padded).

    Ego (SI units, ego frame): forward and lateral speed, sin/cos of the heading error to the route, lateral offset from
    the route, route completion, the penalty factor (scale mode; 1.0 otherwise, kept so the reward stays Markov) and
    the previous action. Route: `num_waypoints` points every `waypoint_spacing` m ahead of the car's projection, as
    ego-frame (x, y); past the route's end the end point repeats. Actors: the `num_actors` nearest within
    `actor_radius` m, nearest first, as (present, x, y, vx, vy) with position and velocity relative to the ego car in
    its frame; missing slots are all zero.
    """

    num_waypoints: int = 8
    waypoint_spacing: float = 4.0
    num_actors: int = 8
    actor_radius: float = 50.0

    def __post_init__(self) -> None:
        """Reject sizes that make no sense."""
        if self.num_waypoints < 1 or self.num_actors < 0:
            raise ValueError("num_waypoints must be >= 1 and num_actors >= 0")
        if self.waypoint_spacing <= 0 or self.actor_radius <= 0:
            raise ValueError("waypoint_spacing and actor_radius must be > 0")

    @property
    def size(self) -> int:
        """Length of the observation vector."""
        return len(EGO_FEATURES) + 2 * self.num_waypoints + len(ACTOR_FEATURES) * self.num_actors

    def feature_names(self) -> list[str]:
        """A name per entry of the observation vector (for inspection and plots)."""
        names = list(EGO_FEATURES)
        names += [f"waypoint{i}_{axis}" for i in range(self.num_waypoints) for axis in ("x", "y")]
        names += [f"actor{i}_{feature}" for i in range(self.num_actors) for feature in ACTOR_FEATURES]
        return names

    def build(self, ego: ActorState, route: Route, projection: RouteProjection, completion: float,
              penalty_factor: float, previous_action: Sequence[float] | np.ndarray,
              actors: Sequence[ActorState]) -> np.ndarray:
        """The observation vector for the ego car's state after a step."""
        forward_speed, lateral_speed = rotate_to_ego(ego, ego.vx, ego.vy)
        heading_error = wrap_angle(ego.yaw - projection.heading)
        steer, throttle_brake = np.asarray(previous_action, dtype=np.float64)[:2]
        ego_part = [forward_speed, lateral_speed, math.sin(heading_error), math.cos(heading_error),
                    projection.lateral, completion, penalty_factor, steer, throttle_brake]
        ahead = route.point_at(projection.s + self.waypoint_spacing * np.arange(1, self.num_waypoints + 1))
        wx, wy = to_ego_frame(ego, ahead[:, 0], ahead[:, 1])
        actor_part = np.zeros((self.num_actors, len(ACTOR_FEATURES)))
        if actors and self.num_actors:
            xs, ys = to_ego_frame(ego, [a.x for a in actors], [a.y for a in actors])
            vxs, vys = rotate_to_ego(ego, [a.vx - ego.vx for a in actors], [a.vy - ego.vy for a in actors])
            distance = np.hypot(xs, ys)
            nearest = [i for i in np.argsort(distance, kind="stable") if distance[i] <= self.actor_radius]
            nearest = nearest[: self.num_actors]
            actor_part[: len(nearest)] = np.stack(
                [np.ones(len(nearest)), xs[nearest], ys[nearest], vxs[nearest], vys[nearest]], axis=1)
        return np.concatenate([ego_part, np.stack([wx, wy], axis=1).ravel(), actor_part.ravel()]).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------------
# Bird's-eye view


BEV_COLORS: Mapping[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "road": (70, 70, 70),
    "route": (40, 110, 230),
    "vehicle": (220, 60, 50),
    "pedestrian": (250, 200, 0),
    "ego": (40, 200, 70),
}


@dataclass(frozen=True)
class BirdsEyeView:
    """An ego-centred top view drawn from the state alone (no camera, so it also works on a server run with
    ``-nullrhi``): driving lanes, the route, other actors and the ego car, which sits in the centre facing up (the
    image's right is the car's right). `meters_per_pixel` sets the range: 128 px at 0.5 m/px shows +-32 m."""

    height: int = 128
    width: int = 128
    meters_per_pixel: float = 0.5

    def __post_init__(self) -> None:
        """Reject a degenerate image."""
        if self.height < 1 or self.width < 1 or self.meters_per_pixel <= 0:
            raise ValueError("BirdsEyeView needs positive height, width and meters_per_pixel")

    @cached_property
    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Ego-frame (forward, lateral) coordinates of every pixel centre."""
        rows, cols = np.mgrid[0:self.height, 0:self.width].astype(np.float64)
        forward = ((self.height - 1) / 2.0 - rows) * self.meters_per_pixel
        lateral = (cols - (self.width - 1) / 2.0) * self.meters_per_pixel
        return forward, lateral

    def render(self, ego: ActorState, route: Route | None = None, actors: Sequence[ActorState] = (),
               road: np.ndarray | None = None) -> np.ndarray:
        """An (height, width, 3) uint8 image. `road`: (n, 3) lane-centre points (x, y, lane width) in the world."""
        image = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        image[:] = BEV_COLORS["background"]
        forward, lateral = self._grid
        reach = 0.5 * math.hypot(self.height, self.width) * self.meters_per_pixel
        if road is not None and len(road):
            road = np.asarray(road, dtype=np.float64)
            self._discs(image, forward, lateral, ego, road[:, 0], road[:, 1], road[:, 2] / 2.0, reach, "road")
        if route is not None:
            samples = route.point_at(np.arange(0.0, route.length + 1.0, 1.0))
            radius = np.full(len(samples), 0.75)
            self._discs(image, forward, lateral, ego, samples[:, 0], samples[:, 1], radius, reach, "route")
        for actor in actors:
            self._box(image, forward, lateral, ego, actor, reach, actor.kind if actor.kind in BEV_COLORS else "vehicle")
        self._box(image, forward, lateral, ego, ego, reach, "ego")
        return image

    def _window(self, fx: float, fy: float, radius: float) -> tuple[slice, slice]:
        """Pixel rows and columns that can hold ego-frame points within `radius` of (fx, fy)."""
        mpp = self.meters_per_pixel
        row_mid, col_mid = (self.height - 1) / 2.0 - fx / mpp, (self.width - 1) / 2.0 + fy / mpp
        span = radius / mpp + 1.0
        rows = slice(max(0, int(math.floor(row_mid - span))), max(0, int(math.ceil(row_mid + span)) + 1))
        cols = slice(max(0, int(math.floor(col_mid - span))), max(0, int(math.ceil(col_mid + span)) + 1))
        return rows, cols

    def _discs(self, image: np.ndarray, forward: np.ndarray, lateral: np.ndarray, ego: ActorState, x: np.ndarray,
               y: np.ndarray, radius: np.ndarray, reach: float, color: str) -> None:
        """Paint filled discs centred on world points (only those that can be in view)."""
        fx, fy = to_ego_frame(ego, x, y)
        for i in np.flatnonzero(np.hypot(fx, fy) <= reach + radius):
            rows, cols = self._window(fx[i], fy[i], radius[i])
            inside = np.square(forward[rows, cols] - fx[i]) + np.square(lateral[rows, cols] - fy[i]) <= radius[i] ** 2
            image[rows, cols][inside] = BEV_COLORS[color]

    def _box(self, image: np.ndarray, forward: np.ndarray, lateral: np.ndarray, ego: ActorState, actor: ActorState,
             reach: float, color: str) -> None:
        """Paint an actor's oriented footprint."""
        fx, fy = to_ego_frame(ego, actor.x, actor.y)
        fx, fy = float(fx), float(fy)
        radius = 0.5 * math.hypot(actor.length, actor.width)
        if math.hypot(fx, fy) > reach + radius:
            return
        rows, cols = self._window(fx, fy, radius)
        relative = actor.yaw - ego.yaw
        dx, dy = forward[rows, cols] - fx, lateral[rows, cols] - fy
        along = dx * math.cos(relative) + dy * math.sin(relative)
        across = -dx * math.sin(relative) + dy * math.cos(relative)
        inside = (np.abs(along) <= actor.length / 2.0) & (np.abs(across) <= actor.width / 2.0)
        image[rows, cols][inside] = BEV_COLORS[color]

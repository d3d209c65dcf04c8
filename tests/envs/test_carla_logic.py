"""The CARLA env's driving logic on hand-made states (no carla package, no server): route progress, reward components
and infractions, observations and the bird's-eye view."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.carla_logic import (
    BEV_COLORS,
    EGO_FEATURES,
    LEADERBOARD_COLLISION_FACTORS,
    ActorState,
    BirdsEyeView,
    Collision,
    DrivingReward,
    DrivingRewardConfig,
    ObservationLayout,
    Route,
    RouteTracker,
    StepEvents,
    collision_kind,
    split_at_frame,
    wrap_angle,
)
from envs.components import combine_components, spec_weights_vector

STRAIGHT = Route([(0.0, 0.0), (100.0, 0.0)])
ELBOW = Route([(0.0, 0.0), (50.0, 0.0), (50.0, 50.0)])  # east 50 m, then a left-hand corner to +y
HAIRPIN = Route([(0.0, 0.0), (100.0, 0.0), (100.0, 5.0), (0.0, 5.0)])  # out and back 5 m apart


# --------------------------------------------------------------------------------------------------------------------
# route progress


def test_projection_onto_a_straight_route():
    p = STRAIGHT.project(10.0, 2.0)
    assert (p.s, p.distance, p.lateral, p.heading) == pytest.approx((10.0, 2.0, 2.0, 0.0))
    assert STRAIGHT.project(30.0, -1.5).lateral == pytest.approx(-1.5)
    before, after = STRAIGHT.project(-5.0, 0.0), STRAIGHT.project(104.0, 3.0)
    assert (before.s, before.distance) == pytest.approx((0.0, 5.0))
    assert (after.s, after.distance) == pytest.approx((100.0, 5.0))


def test_projection_after_a_corner_uses_the_second_segment():
    p = ELBOW.project(52.0, 10.0)
    assert p.s == pytest.approx(60.0) and p.distance == pytest.approx(2.0)
    assert p.heading == pytest.approx(math.pi / 2)
    assert p.lateral == pytest.approx(-2.0)  # the +90 deg side of a route heading +y is -x
    assert ELBOW.point_at(60.0) == pytest.approx([50.0, 10.0])
    assert ELBOW.point_at([-3.0, 25.0, 999.0]) == pytest.approx(np.array([[0.0, 0.0], [25.0, 0.0], [50.0, 50.0]]))
    assert ELBOW.length == pytest.approx(100.0)


def test_windowed_projection_follows_a_route_that_passes_twice():
    out, back = HAIRPIN.project(10.0, 2.4, near=8.0), HAIRPIN.project(10.0, 2.4, near=190.0)
    assert out.s == pytest.approx(10.0) and out.distance == pytest.approx(2.4)
    assert back.s == pytest.approx(195.0) and back.distance == pytest.approx(2.6)


def test_route_drops_repeated_points_and_rejects_degenerate_ones():
    route = Route([(0, 0), (0, 0), (3, 4), (3, 4), (3, 10)])
    assert route.length == pytest.approx(11.0) and len(route.points) == 3
    with pytest.raises(ValueError, match="two distinct points"):
        Route([(1, 1), (1, 1)])
    with pytest.raises(ValueError, match="shape"):
        Route([1.0, 2.0, 3.0])


def test_truncated_route_keeps_the_first_metres():
    cut = ELBOW.truncated(70.0)
    assert cut.length == pytest.approx(70.0)
    assert cut.points[-1] == pytest.approx([50.0, 20.0])
    assert ELBOW.truncated(500.0) is ELBOW


def test_tracker_pays_each_metre_once_and_completion_never_drops():
    tracker = RouteTracker(STRAIGHT)
    assert tracker.reset(2.0, 0.5).s == pytest.approx(2.0)
    gains, completions = [], []
    for x in (4.0, 7.0, 5.0, 6.0, 9.5, 9.5):  # drives forward, reverses 2 m, then passes the old best
        projection, gained = tracker.update(x, 0.3)
        gains.append(gained)
        completions.append(tracker.completion)
        assert projection.distance == pytest.approx(0.3)
    assert gains == pytest.approx([2.0, 3.0, 0.0, 0.0, 2.5, 0.0])
    assert completions == sorted(completions) and tracker.completion == pytest.approx(0.095)
    assert tracker.remaining() == pytest.approx(90.5)


def test_tracker_reports_distance_to_route_when_the_car_strays():
    tracker = RouteTracker(ELBOW)
    tracker.reset(0.0, 0.0)
    projection, gained = tracker.update(20.0, 12.0)
    assert projection.distance == pytest.approx(12.0) and gained == pytest.approx(20.0)


# --------------------------------------------------------------------------------------------------------------------
# reward components and infractions


def names(reward: DrivingReward) -> list[str]:
    return [c.name for c in reward.spec]


def test_collision_kinds_from_blueprint_ids():
    assert collision_kind("vehicle.tesla.model3") == "vehicle"
    assert collision_kind("walker.pedestrian.0001") == "pedestrian"
    assert collision_kind("static.prop.streetbarrier") == "static" and collision_kind("") == "static"


def test_terminate_mode_components_and_reward():
    config = DrivingRewardConfig(progress_weight=2.0, collision_weight=5.0, off_road_weight=1.5,
                                 lane_invasion_weight=0.25, action_change_weight=0.1)
    reward = DrivingReward(config)
    assert names(reward) == ["route_progress", "collision", "off_road", "lane_invasion", "action_change"]
    assert [c.direction for c in reward.spec] == ["maximize"] + ["minimize"] * 4
    first = reward.step(1.5, StepEvents(), [0.2, 0.5])
    assert first.values == pytest.approx((1.5, 0.0, 0.0, 0.0, 0.0))  # no previous action yet
    assert first.reward == pytest.approx(3.0) and first.terminal_infraction is None
    second = reward.step(0.5, StepEvents(lane_invasions=2), [-0.1, 0.1])
    assert second.values == pytest.approx((0.5, 0.0, 0.0, 1.0, 0.09 + 0.16))
    assert second.reward == pytest.approx(2.0 * 0.5 - 0.25 - 0.1 * 0.25)
    crash = reward.step(0.2, StepEvents(collisions=(Collision(7, "vehicle"),), off_road=True), [-0.1, 0.1])
    assert crash.terminal_infraction == "collision" and crash.penalty_factor == 1.0
    assert crash.reward == pytest.approx(0.4 - 5.0 - 1.5)
    assert reward.step(0.0, StepEvents(off_road=True), [0.0, 0.0]).terminal_infraction == "off_road"


def test_scale_mode_multiplies_progress_per_infraction_as_carl():
    reward = DrivingReward(DrivingRewardConfig(infractions="scale", progress_weight=1.0, collision_weight=0.0,
                                               off_road_weight=0.0, lane_invasion_weight=0.0,
                                               action_change_weight=0.0))
    assert names(reward)[:2] == ["route_progress", "infraction_discount"]
    car, person = Collision(11, "vehicle"), Collision(12, "pedestrian")
    steps = [
        (StepEvents(), 1.0, 1.0, ()),
        (StepEvents(collisions=(car,)), 1.0, 0.6, ("collision_vehicle",)),
        (StepEvents(collisions=(car,)), 1.0, 0.6, ()),  # still touching the same car: counted once
        (StepEvents(collisions=(car, person)), 2.0, 0.3, ("collision_pedestrian",)),
        (StepEvents(off_road=True), 1.0, 0.21, ("off_road",)),
        (StepEvents(off_road=True), 1.0, 0.21, ()),  # staying off-road is one infraction
        (StepEvents(), 1.0, 0.21, ()),
        (StepEvents(collisions=(car,)), 1.0, 0.126, ("collision_vehicle",)),  # a new contact with it counts again
    ]
    for events, progress, factor, counted in steps:
        result = reward.step(progress, events, [0.0, 0.0])
        assert result.terminal_infraction is None
        assert result.penalty_factor == pytest.approx(factor) and result.counted_infractions == counted
        assert result.values[1] == pytest.approx(progress * (1.0 - factor))
        assert result.reward == pytest.approx(progress * factor)  # CaRL: progress times the penalty factors
    reward.reset()
    assert reward.step(1.0, StepEvents(), [0.0, 0.0]).reward == pytest.approx(1.0)


def test_scale_mode_uses_configured_factors_and_keeps_the_other_weights():
    config = DrivingRewardConfig(infractions="scale", collision_factors={"pedestrian": 0.1, "vehicle": 0.9,
                                                                         "static": 0.8}, off_road_factor=0.5)
    reward = DrivingReward(config)
    result = reward.step(3.0, StepEvents(collisions=(Collision(0, "static"),), off_road=True), [0.0, 0.0])
    assert result.penalty_factor == pytest.approx(0.4)
    expected = 3.0 * 0.4 - config.collision_weight - config.off_road_weight
    assert result.reward == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["terminate", "scale"])
def test_declared_weights_reproduce_the_reward_exactly(mode):
    rng = np.random.default_rng(3)
    reward = DrivingReward(DrivingRewardConfig(infractions=mode, progress_weight=0.7, collision_weight=3.0,
                                               off_road_weight=2.0, lane_invasion_weight=0.3,
                                               action_change_weight=0.2))
    weights = spec_weights_vector(reward.spec)
    for _ in range(200):
        collisions = tuple(Collision(int(i), str(rng.choice(["vehicle", "pedestrian", "static"])))
                           for i in rng.choice(4, size=rng.integers(0, 3), replace=False))
        events = StepEvents(collisions=collisions, lane_invasions=int(rng.integers(0, 3)),
                            off_road=bool(rng.random() < 0.2))
        result = reward.step(float(rng.uniform(-0.5, 3.0)), events, rng.uniform(-1, 1, size=2))
        by_name = dict(zip(names(reward), result.values, strict=True))
        assert result.reward == combine_components(reward.spec, by_name)
        assert result.reward == pytest.approx(float(np.asarray(result.values) @ weights), abs=1e-12)
        assert by_name["route_progress"] >= 0.0  # negative progress is clipped


def test_reward_config_rejects_bad_values():
    with pytest.raises(ValueError, match="infractions"):
        DrivingRewardConfig(infractions="ignore")
    with pytest.raises(ValueError, match="collision_weight"):
        DrivingRewardConfig(collision_weight=-1.0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        DrivingRewardConfig(off_road_factor=0.0)
    with pytest.raises(ValueError, match="kinds"):
        DrivingRewardConfig(collision_factors={"vehicle": 0.5})
    assert DrivingRewardConfig().collision_factors == dict(LEADERBOARD_COLLISION_FACTORS)


# --------------------------------------------------------------------------------------------------------------------
# observations


def test_observation_size_and_names():
    layout = ObservationLayout(num_waypoints=3, num_actors=2)
    assert layout.size == len(EGO_FEATURES) + 6 + 10 == len(layout.feature_names())
    assert layout.feature_names()[len(EGO_FEATURES)] == "waypoint0_x"
    assert layout.feature_names()[-1] == "actor1_vy"
    with pytest.raises(ValueError):
        ObservationLayout(num_waypoints=0)


def test_ego_state_and_waypoints_on_a_straight_route():
    layout = ObservationLayout(num_waypoints=3, waypoint_spacing=5.0, num_actors=1)
    ego = ActorState(x=10.0, y=0.5, yaw=0.1, vx=5.0 * math.cos(0.1), vy=5.0 * math.sin(0.1))
    projection = STRAIGHT.project(ego.x, ego.y)
    obs = layout.build(ego, STRAIGHT, projection, 0.1, 0.6, [0.25, -0.5], [])
    assert obs.dtype == np.float32 and obs.shape == (layout.size,)
    ego_part = dict(zip(EGO_FEATURES, obs[: len(EGO_FEATURES)], strict=True))
    assert ego_part["forward_speed"] == pytest.approx(5.0, abs=1e-5)
    assert ego_part["lateral_speed"] == pytest.approx(0.0, abs=1e-5)
    assert ego_part["heading_error_sin"] == pytest.approx(math.sin(0.1), abs=1e-6)
    assert ego_part["lateral_offset"] == pytest.approx(0.5)
    assert (ego_part["route_completion"], ego_part["penalty_factor"]) == pytest.approx((0.1, 0.6))
    assert (ego_part["previous_steer"], ego_part["previous_throttle_brake"]) == (0.25, -0.5)
    waypoints = obs[len(EGO_FEATURES): len(EGO_FEATURES) + 6].reshape(3, 2)
    for k, (wx, wy) in enumerate(waypoints, start=1):  # route points at x = 10 + 5k, y = 0, seen from the ego car
        dx, dy = 5.0 * k, -0.5
        assert wx == pytest.approx(dx * math.cos(0.1) + dy * math.sin(0.1), abs=1e-5)
        assert wy == pytest.approx(-dx * math.sin(0.1) + dy * math.cos(0.1), abs=1e-5)


def test_waypoints_past_the_route_end_repeat_the_end_point():
    layout = ObservationLayout(num_waypoints=4, waypoint_spacing=10.0, num_actors=0)
    ego = ActorState(x=85.0, y=0.0)
    obs = layout.build(ego, STRAIGHT, STRAIGHT.project(85.0, 0.0), 0.85, 1.0, [0.0, 0.0], [])
    xs = obs[len(EGO_FEATURES)::2]
    assert xs == pytest.approx([10.0, 15.0, 15.0, 15.0])


def test_actors_are_relative_nearest_first_and_zero_padded():
    layout = ObservationLayout(num_waypoints=1, num_actors=3, actor_radius=30.0)
    ego = ActorState(x=10.0, y=0.0, yaw=math.pi / 2, vx=0.0, vy=4.0)  # facing +y
    actors = [
        ActorState(x=10.0, y=20.0, vx=0.0, vy=1.0),  # 20 m ahead, 3 m/s slower
        ActorState(x=9.0, y=0.0),  # 1 m to the car's +90 deg side (-x here), standing
        ActorState(x=10.0, y=-50.0),  # beyond actor_radius
    ]
    obs = layout.build(ego, ELBOW, ELBOW.project(ego.x, ego.y), 0.0, 1.0, [0.0, 0.0], actors)
    rows = obs[-15:].reshape(3, 5)
    assert rows[0] == pytest.approx([1.0, 0.0, 1.0, -4.0, 0.0], abs=1e-6)
    assert rows[1] == pytest.approx([1.0, 20.0, 0.0, -3.0, 0.0], abs=1e-6)
    assert np.all(rows[2] == 0.0)
    many = [ActorState(x=10.0, y=float(d)) for d in (9, 3, 7, 5, 1)]
    rows = layout.build(ego, ELBOW, ELBOW.project(ego.x, ego.y), 0.0, 1.0, [0.0, 0.0], many)[-15:].reshape(3, 5)
    assert rows[:, 1] == pytest.approx([1.0, 3.0, 5.0])  # the three nearest, in order
    empty = layout.build(ego, ELBOW, ELBOW.project(ego.x, ego.y), 0.0, 1.0, [0.0, 0.0], [])
    assert empty.shape == obs.shape and np.all(empty[-15:] == 0.0)


def test_heading_error_is_wrapped():
    assert wrap_angle(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    layout = ObservationLayout(num_waypoints=1, num_actors=0)
    ego = ActorState(x=10.0, y=0.0, yaw=2 * math.pi - 0.2)
    obs = layout.build(ego, STRAIGHT, STRAIGHT.project(10.0, 0.0), 0.0, 1.0, [0.0, 0.0], [])
    assert obs[2] == pytest.approx(math.sin(-0.2), abs=1e-6) and obs[3] == pytest.approx(math.cos(0.2), abs=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# bird's-eye view


def color_at(image: np.ndarray, row: int, col: int) -> tuple[int, ...]:
    return tuple(int(v) for v in image[row, col])


def test_birds_eye_view_puts_the_ego_car_in_the_middle_facing_up():
    bev = BirdsEyeView(height=81, width=81, meters_per_pixel=0.5)  # centre pixel (40, 40)
    ego = ActorState(x=10.0, y=0.0, yaw=math.pi / 2)  # facing +y
    ahead = ActorState(x=10.0, y=10.0, yaw=math.pi / 2)  # 10 m ahead -> 20 px up
    right = ActorState(x=0.0, y=0.0, kind="pedestrian", length=0.6, width=0.6)  # 10 m to the car's right (-x here)
    road = np.array([[10.0, y, 3.5] for y in np.arange(-30.0, 31.0, 2.0)])
    route = Route([(10.0, 0.0), (10.0, 30.0)])
    image = bev.render(ego, route, [ahead, right], road)
    assert image.shape == (81, 81, 3) and image.dtype == np.uint8
    assert color_at(image, 40, 40) == BEV_COLORS["ego"]
    assert color_at(image, 40 - 20, 40) == BEV_COLORS["vehicle"]
    assert color_at(image, 40, 40 + 20) == BEV_COLORS["pedestrian"]
    assert color_at(image, 40 - 30, 40) == BEV_COLORS["route"]  # route ahead, beyond the other car
    assert color_at(image, 40 + 20, 40 + 2) == BEV_COLORS["road"]  # road behind, off the route line
    assert color_at(image, 40, 40 - 30) == BEV_COLORS["background"]
    assert color_at(image, 40 - 20, 40 + 3) == BEV_COLORS["road"]  # 1.5 m aside: off the 2 m wide car, on the road


def test_birds_eye_view_rotates_boxes_with_their_yaw():
    bev = BirdsEyeView(height=41, width=41, meters_per_pixel=0.5)
    ego = ActorState(x=0.0, y=0.0, yaw=0.0)
    crossing = ActorState(x=8.0, y=0.0, yaw=math.pi / 2, length=6.0, width=1.0)  # across the ego car's path
    image = bev.render(ego, None, [crossing])
    assert color_at(image, 20 - 16, 20 + 5) == BEV_COLORS["vehicle"]  # 2.5 m to the side: inside its length
    assert color_at(image, 20 - 14, 20) == BEV_COLORS["background"]  # 1 m short of its centre: outside its width


def test_sensor_events_after_the_tick_wait_for_the_next_step():
    events = [(10, "a"), (12, "late"), (11, "b"), (13, "later")]
    now, later = split_at_frame(events, 11)
    assert now == ["a", "b"] and later == [(12, "late"), (13, "later")]
    assert split_at_frame(later, 13) == (["late", "later"], [])
    assert split_at_frame([], 5) == ([], [])

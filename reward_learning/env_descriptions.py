"""Text2Reward-style descriptions of tasks for LLM reward-code generation, and the binding of field names to
observation entries.

A `TaskDescription` renders a compact, class-like listing of the observation (named fields with their indices, units
and meaning), the action and the env's reward components. It is pure data: `robotrl` reads the env (observation
shape, action space, reward spec, highway-env's observation settings) and passes that in; this module never imports
`envs`. Layouts follow the installed simulators: gymnasium 1.4.0's MuJoCo v5 `_get_obs` (default kwargs: current x
(and y for Ant) positions excluded, Ant's contact forces included), Meta-World 3.1.1's `_get_obs` and highway-env's
Kinematics observation.

Binding of names (one design, used everywhere): generated code reads named fields with `field(next_obs, "name")`,
which returns [batch] for a scalar field or [batch, k] for a vector, or indexes `obs[:, i]` directly (the listing
gives both). `TaskDescription.bind(code)` appends the definitions of `OBS_FIELDS` and `field` after the model's code
(after, so that line numbers in error messages are the model's own). The bound file is self-contained reward code in
the sandbox contract: `robotrl reward check`, `SandboxedReward` and training run it unchanged, with no extra inputs.
The env's reward components stay the sandbox's named inputs (keyword parameters of `compute_dense_reward`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

BINDING_MARKER = "# ---- observation fields"
VELOCITY_NOTE = ("the x_velocity field is the velocity at the end of the step; the forward_velocity input is the "
                 "mean x velocity over the step (displacement / duration).")


@dataclass(frozen=True)
class ObsField:
    """A named part of one observation row: index `start` (scalar) or `start:stop:step` (vector)."""

    name: str
    start: int
    stop: int | None = None
    step: int = 1
    unit: str = ""
    meaning: str = ""

    @property
    def index(self) -> str:
        """The index expression on a batch `x` ([batch, obs_dim]), e.g. `x[:, 3]` or `x[:, 4:7]`."""
        if self.stop is None:
            return f"x[:, {self.start}]"
        return f"x[:, {self.start}:{self.stop}" + (f":{self.step}]" if self.step != 1 else "]")

    @property
    def size(self) -> int:
        return 1 if self.stop is None else len(range(self.start, self.stop, self.step))


@dataclass(frozen=True)
class ComponentInfo:
    """A reward component of the env as the description shows it (mirrors `envs.components.RewardComponent`)."""

    name: str
    weight: float
    direction: str
    description: str


@dataclass(frozen=True)
class ActionInfo:
    """The action space: `discrete` with `n` choices (`labels` names them) or a box of `shape` in [low, high]
    (`labels` names the entries)."""

    discrete: bool
    shape: tuple[int, ...] = ()
    n: int = 0
    low: float = -1.0
    high: float = 1.0
    labels: tuple[str, ...] = ()

    def text(self) -> str:
        if self.discrete:
            lines = [f"    action: int array [batch], one of {self.n} discrete choices (the index)"]
            lines += [f"        {i}: {label}" for i, label in enumerate(self.labels)]
        else:
            lines = [f"    action: float array [batch, {', '.join(map(str, self.shape))}], each entry in "
                     f"[{self.low:g}, {self.high:g}]"]
            lines += [f"        action[:, {i}]: {label}" for i, label in enumerate(self.labels)]
        return "\n".join(lines)


@dataclass(frozen=True)
class HighwayObservation:
    """highway-env Kinematics settings (read from the env by robotrl): feature names per vehicle row, rows, whether
    other vehicles are absolute or relative to the ego, and the normalisation ranges (None: not normalised)."""

    features: tuple[str, ...]
    vehicles: int
    absolute: bool = False
    ranges: Mapping[str, tuple[float, float]] | None = None


@dataclass(frozen=True)
class TaskDescription:
    """What the LLM is told about a task, and the code that binds its field names."""

    env_id: str
    summary: str
    obs_size: int
    fields: tuple[ObsField, ...]
    action: ActionInfo
    components: tuple[ComponentInfo, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def field(self, name: str) -> ObsField:
        for item in self.fields:
            if item.name == name:
                return item
        raise KeyError(f"{self.env_id} has no observation field {name!r}; fields: {self.field_names()}")

    def field_names(self) -> list[str]:
        return [item.name for item in self.fields]

    def text(self) -> str:
        """The Pythonic listing shown to the model."""
        lines = [f"Environment {self.env_id}: {self.summary}", "",
                 "class Observation:",
                 f'    """obs and next_obs: float arrays [batch, {self.obs_size}], one row per transition (the '
                 f'state before and after the action).']
        if self.fields:
            lines.append('    Read a field with field(next_obs, "name") -> [batch] (or [batch, k] for a vector), or '
                         'index obs[:, i] directly."""')
            for item in self.fields:
                shape = "float" if item.size == 1 else f"array[{item.size}]"
                unit = f" ({item.unit})" if item.unit else ""
                lines.append(f"    {item.name}: {shape}  # {item.index.replace('x', 'obs', 1)}  {item.meaning}{unit}")
        else:
            lines.append('    No named fields are known for this observation: index obs[:, i]."""')
        lines += ["", "class Action:", self.action.text(), "",
                  "Named inputs (keyword parameters of compute_dense_reward, each an array [batch]):",
                  "    terminated: bool, True where the episode ended at this transition"]
        for c in self.components:
            sign = "adds" if c.direction == "maximize" else "subtracts"
            lines.append(f"    {c.name}: {c.description} (the env's own reward {sign} {c.weight:g} * {c.name})")
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines)

    def binding_code(self) -> str:
        """Sandbox-contract code defining `OBS_FIELDS` (name -> accessor) and `field(x, name)`."""
        names = ", ".join(self.field_names())
        lines = [f"{BINDING_MARKER} of {self.env_id}, added by robotrl: field(x, name) reads a named part of obs "
                 f"or next_obs ----", "OBS_FIELDS = {"]
        lines += [f'    "{item.name}": lambda x: {item.index},' for item in self.fields]
        lines += ["}", "", "",
                  "def field(x, name):",
                  f'    assert name in OBS_FIELDS, "unknown observation field \'" + str(name) + "\'; fields: {names}"',
                  "    return OBS_FIELDS[name](x)", ""]
        return "\n".join(lines)

    def bind(self, code: str) -> str:
        """The model's code followed by the field binding (replacing a binding it already carries)."""
        code = code.split(BINDING_MARKER)[0].rstrip()
        return f"{code}\n\n\n{self.binding_code()}" if self.fields else code + "\n"


# ------------------------------------------------------------------------------------------------ layouts
Row = tuple[str, str, str]  # name, unit, meaning

_HALF_CHEETAH: tuple[Row, ...] = (
    ("rootz", "m", "z-coordinate (height) of the front tip"), ("rooty", "rad", "angle of the front tip (pitch)"),
    ("bthigh_angle", "rad", "angle of the back thigh"), ("bshin_angle", "rad", "angle of the back shin"),
    ("bfoot_angle", "rad", "angle of the back foot"), ("fthigh_angle", "rad", "angle of the front thigh"),
    ("fshin_angle", "rad", "angle of the front shin"), ("ffoot_angle", "rad", "angle of the front foot"),
    ("x_velocity", "m/s", "forward (x) velocity of the front tip"), ("z_velocity", "m/s", "vertical velocity"),
    ("angular_velocity", "rad/s", "angular velocity of the front tip (pitch rate)"),
    ("bthigh_velocity", "rad/s", "angular velocity of the back thigh"),
    ("bshin_velocity", "rad/s", "angular velocity of the back shin"),
    ("bfoot_velocity", "rad/s", "angular velocity of the back foot"),
    ("fthigh_velocity", "rad/s", "angular velocity of the front thigh"),
    ("fshin_velocity", "rad/s", "angular velocity of the front shin"),
    ("ffoot_velocity", "rad/s", "angular velocity of the front foot"))
_HOPPER: tuple[Row, ...] = (
    ("torso_height", "m", "z-coordinate of the torso (healthy above 0.7)"),
    ("torso_angle", "rad", "angle of the torso (healthy within [-0.2, 0.2])"),
    ("thigh_angle", "rad", "angle of the thigh joint"), ("leg_angle", "rad", "angle of the leg joint"),
    ("foot_angle", "rad", "angle of the foot joint"),
    ("x_velocity", "m/s", "forward (x) velocity of the torso, clipped to [-10, 10]"),
    ("z_velocity", "m/s", "vertical velocity of the torso, clipped to [-10, 10]"),
    ("angular_velocity", "rad/s", "angular velocity of the torso"),
    ("thigh_velocity", "rad/s", "angular velocity of the thigh joint"),
    ("leg_velocity", "rad/s", "angular velocity of the leg joint"),
    ("foot_velocity", "rad/s", "angular velocity of the foot joint"))
_WALKER: tuple[Row, ...] = (
    ("torso_height", "m", "z-coordinate of the torso (healthy within [0.8, 2.0])"),
    ("torso_angle", "rad", "angle of the torso (healthy within [-1, 1])"),
    ("thigh_angle", "rad", "angle of the right thigh joint"), ("leg_angle", "rad", "angle of the right leg joint"),
    ("foot_angle", "rad", "angle of the right foot joint"),
    ("thigh_left_angle", "rad", "angle of the left thigh joint"),
    ("leg_left_angle", "rad", "angle of the left leg joint"),
    ("foot_left_angle", "rad", "angle of the left foot joint"),
    ("x_velocity", "m/s", "forward (x) velocity of the torso, clipped to [-10, 10]"),
    ("z_velocity", "m/s", "vertical velocity of the torso, clipped to [-10, 10]"),
    ("angular_velocity", "rad/s", "angular velocity of the torso"),
    ("thigh_velocity", "rad/s", "angular velocity of the right thigh"),
    ("leg_velocity", "rad/s", "angular velocity of the right leg"),
    ("foot_velocity", "rad/s", "angular velocity of the right foot"),
    ("thigh_left_velocity", "rad/s", "angular velocity of the left thigh"),
    ("leg_left_velocity", "rad/s", "angular velocity of the left leg"),
    ("foot_left_velocity", "rad/s", "angular velocity of the left foot"))
_ANT_LEGS = ("front_left", "front_right", "back_left", "back_right")
_PENDULUM: tuple[Row, ...] = (
    ("cos_theta", "", "cosine of the pole angle (1 when upright)"), ("sin_theta", "", "sine of the pole angle"),
    ("angular_velocity", "rad/s", "angular velocity of the pole, in [-8, 8]"))


def _ant_fields(obs_size: int) -> list[ObsField]:
    fields = [ObsField("torso_height", 0, unit="m", meaning="z-coordinate of the torso (healthy within [0.2, 1.0])"),
              ObsField("torso_quaternion", 1, 5, meaning="orientation of the torso as a quaternion (w, x, y, z)")]
    fields += [ObsField(f"{leg}_{part}_angle", 5 + 2 * i + j, unit="rad", meaning=f"{leg.replace('_', ' ')} "
                        f"{'hip (torso to first link)' if j == 0 else 'ankle (between the two links)'} angle")
               for i, leg in enumerate(_ANT_LEGS) for j, part in enumerate(("hip", "ankle"))]
    fields += [ObsField("x_velocity", 13, unit="m/s", meaning="forward (x) velocity of the torso"),
               ObsField("y_velocity", 14, unit="m/s", meaning="sideways (y) velocity of the torso"),
               ObsField("z_velocity", 15, unit="m/s", meaning="vertical velocity of the torso"),
               ObsField("torso_angular_velocity", 16, 19, unit="rad/s", meaning="angular velocity of the torso "
                        "(x, y, z)"),
               ObsField("joint_velocities", 19, 27, unit="rad/s", meaning="angular velocities of the 8 leg joints "
                        "(same order as the angles)")]
    if obs_size > 27:
        fields.append(ObsField("contact_forces", 27, obs_size, meaning="external contact forces and torques on the "
                               "13 bodies after the world (6 per body)"))
    return fields


_MUJOCO: dict[str, tuple[str, tuple[Row, ...], tuple[str, ...]]] = {
    "HalfCheetah": ("a 2-D cheetah robot (9 links, 6 joints) that can run along the x axis; episodes never end "
                    "early (1000 steps).", _HALF_CHEETAH,
                    ("torque on the back thigh", "torque on the back shin", "torque on the back foot",
                     "torque on the front thigh", "torque on the front shin", "torque on the front foot")),
    "Hopper": ("a 2-D one-legged hopper (torso, thigh, leg, foot) that can hop along the x axis; the episode ends "
               "when it becomes unhealthy (falls or tilts too far).", _HOPPER,
               ("torque on the thigh joint", "torque on the leg joint", "torque on the foot joint")),
    "Walker2d": ("a 2-D two-legged walker (torso and two legs of thigh, leg, foot) that can walk along the x axis; "
                 "the episode ends when it becomes unhealthy (falls).", _WALKER,
                 ("torque on the right thigh", "torque on the right leg", "torque on the right foot",
                  "torque on the left thigh", "torque on the left leg", "torque on the left foot")),
    "Pendulum": ("an inverted pendulum that starts at a random angle and must be swung up and balanced upright "
                 "(200 steps).", _PENDULUM, ("torque on the pole, in [-2, 2]",)),
}
_ANT = ("a 3-D four-legged ant robot (torso and four two-link legs) that can walk in the x-y plane; the episode ends "
        "when it becomes unhealthy (torso height outside [0.2, 1.0]).",
        ("torque on the back right hip", "torque on the back right ankle", "torque on the front left hip",
         "torque on the front left ankle", "torque on the front right hip", "torque on the front right ankle",
         "torque on the back left hip", "torque on the back left ankle"))

_METAWORLD_FRAME = (
    ("hand_pos", 0, 3, "m", "end-effector (hand) position x, y, z; the point between the fingertips is ~0.045 m "
                            "lower"),
    ("gripper_openness", 3, None, "", "distance between the two fingers / 0.1 m, in [0, 1] (0: closed, 1: open)"),
    ("obj1_pos", 4, 7, "m", "position of the task's main object (x, y, z)"),
    ("obj1_quat", 7, 11, "", "orientation of the main object as a quaternion"),
    ("obj2_pos", 11, 14, "m", "position of a second object (zeros when the task has none)"),
    ("obj2_quat", 14, 18, "", "orientation of the second object (zeros when the task has none)"))


def _metaworld_fields(obs_size: int) -> list[ObsField]:
    fields = [ObsField(name, start, stop, unit=unit, meaning=meaning)
              for name, start, stop, unit, meaning in _METAWORLD_FRAME]
    fields += [ObsField(f"prev_{name}", start + 18, None if stop is None else stop + 18, unit=unit,
                        meaning=f"{meaning}, one step earlier")
               for name, start, stop, unit, meaning in _METAWORLD_FRAME]
    fields.append(ObsField("goal_pos", 36, 39, unit="m", meaning="goal position (x, y, z)"))
    if obs_size > 39:
        fields.append(ObsField("task_one_hot", 39, obs_size, meaning="one-hot id of the task (multi-task benchmark)"))
    return fields


_HIGHWAY_FEATURES = {
    "presence": ("", "1 if the row holds a vehicle, 0 for an empty row"), "x": ("m", "longitudinal position"),
    "y": ("m", "lateral position"), "vx": ("m/s", "longitudinal velocity"), "vy": ("m/s", "lateral velocity"),
    "heading": ("rad", "heading angle"), "cos_h": ("", "cosine of the heading"), "sin_h": ("", "sine of the heading"),
    "cos_d": ("", "cosine of the direction to the destination"), "sin_d": ("", "sine of the direction to the "
                                                                            "destination"),
    "long_off": ("m", "longitudinal offset along its lane"), "lat_off": ("m", "lateral offset from the lane centre"),
    "ang_off": ("rad", "heading offset from the lane direction")}


def _highway_fields(obs: HighwayObservation) -> list[ObsField]:
    width = len(obs.features)
    ego, others = [], []
    for f, feature in enumerate(obs.features):
        unit, meaning = _HIGHWAY_FEATURES.get(feature, ("", feature))
        if obs.ranges is not None and feature in obs.ranges:
            low, high = obs.ranges[feature]
            unit = f"scaled from [{low:g}, {high:g}] {unit} to [-1, 1]".replace("  ", " ")
        ego.append(ObsField(f"ego_{feature}", f, unit=unit, meaning=f"ego vehicle: {meaning}"))
        relative = " relative to the ego" if not obs.absolute and feature in ("x", "y", "vx", "vy") else ""
        if obs.vehicles > 1:
            others.append(ObsField(f"others_{feature}", width + f, width * obs.vehicles, width, unit=unit,
                                   meaning=f"the {obs.vehicles - 1} nearest other vehicles (nearest first): "
                                           f"{meaning}{relative}"))
    return ego + others


def describe_task(env_id: str, obs_size: int, action: ActionInfo, components: Sequence[ComponentInfo] = (),
                  highway: HighwayObservation | None = None, summary: str | None = None) -> TaskDescription:
    """The description of `env_id` with its observation fields where the layout is known (MuJoCo HalfCheetah,
    Hopper, Walker2d, Ant, Pendulum, Meta-World, highway with `highway` given); other envs (or a size that does not
    match the known layout, e.g. made with other kwargs) get a listing without named fields."""
    base = env_id.split("/")[-1].split("-v")[0]
    notes: list[str] = []
    fields: list[ObsField] = []
    text = summary
    if base in _MUJOCO:
        default, rows, labels = _MUJOCO[base]
        if obs_size == len(rows):
            fields = [ObsField(name, i, unit=unit, meaning=meaning) for i, (name, unit, meaning) in enumerate(rows)]
        action = _labelled(action, labels)
        text = text or default
        if fields and base != "Pendulum":
            notes.append(VELOCITY_NOTE)
    elif base == "Ant":
        if obs_size in (27, 105):
            fields = _ant_fields(obs_size)
            notes.append(VELOCITY_NOTE)
        action = _labelled(action, _ANT[1])
        text = text or _ANT[0]
    elif env_id.startswith("metaworld/"):
        if obs_size >= 39:
            fields = _metaworld_fields(obs_size)
        text = text or (f"a Sawyer robot arm with a two-finger gripper on a table, Meta-World task "
                        f"'{env_id.split('/', 1)[1]}'; positions in metres in the world frame; episodes last 500 "
                        f"steps and do not end on success.")
        action = _labelled(action, ("end-effector displacement along x", "end-effector displacement along y",
                                    "end-effector displacement along z", "gripper: -1 opens, +1 closes"))
    elif highway is not None:
        if obs_size == len(highway.features) * highway.vehicles:
            fields = _highway_fields(highway)
        text = text or (f"highway-env driving scenario '{env_id.split('/', 1)[1]}': the ego vehicle drives among "
                        f"other traffic; observation rows are vehicles (row 0 the ego), columns the features "
                        f"{', '.join(highway.features)}.")
        notes.append("a crash ends the episode; the 'collision' component is 1 at that transition.")
    if not fields and obs_size and (base in _MUJOCO or base == "Ant" or env_id.startswith("metaworld/")):
        notes.append(f"the observation has {obs_size} entries, not the default layout: no named fields.")
    return TaskDescription(env_id, text or "a control task.", obs_size, tuple(fields), action, tuple(components),
                           tuple(notes))


def _labelled(action: ActionInfo, labels: Sequence[str]) -> ActionInfo:
    """`action` with entry labels when their count matches its shape."""
    if action.discrete or action.labels or action.shape != (len(labels),):
        return action
    return ActionInfo(False, action.shape, low=action.low, high=action.high, labels=tuple(labels))

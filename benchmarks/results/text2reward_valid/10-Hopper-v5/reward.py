import numpy as np

def compute_dense_reward(obs, action, next_obs, terminated=None, **kwargs):
    """
    Computes the reward for a hop forward while staying upright.

    Args:
        obs (object): the original observation object
        action (object): the action for which the hop forward is performed (either forward_velocity or forward_directional_velocity)
        next_obs (object): the next observation object
        terminated (bool, optional, default=None) A boolean indicating that the loop should end after the next observation has been completed. Defaults to None.
        **kwargs: additional keyword arguments to be used by the function.
    """
    return np.linalg.norm(obs, axis=-1)


# ---- observation fields of Hopper-v5, added by robotrl: field(x, name) reads a named part of obs or next_obs ----
OBS_FIELDS = {
    "torso_height": lambda x: x[:, 0],
    "torso_angle": lambda x: x[:, 1],
    "thigh_angle": lambda x: x[:, 2],
    "leg_angle": lambda x: x[:, 3],
    "foot_angle": lambda x: x[:, 4],
    "x_velocity": lambda x: x[:, 5],
    "z_velocity": lambda x: x[:, 6],
    "angular_velocity": lambda x: x[:, 7],
    "thigh_velocity": lambda x: x[:, 8],
    "leg_velocity": lambda x: x[:, 9],
    "foot_velocity": lambda x: x[:, 10],
}


def field(x, name):
    assert name in OBS_FIELDS, "unknown observation field '" + str(name) + "'; fields: torso_height, torso_angle, thigh_angle, leg_angle, foot_angle, x_velocity, z_velocity, angular_velocity, thigh_velocity, leg_velocity, foot_velocity"
    return OBS_FIELDS[name](x)

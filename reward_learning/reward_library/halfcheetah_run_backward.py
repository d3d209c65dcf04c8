"""Goal: make the cheetah run backwards (towards negative x) while keeping its body level
Env: HalfCheetah-v5
"""
import numpy as np


def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
    backward = -field(next_obs, "x_velocity")
    tilt = 0.5 * np.abs(field(next_obs, "rooty"))
    effort = 0.05 * np.square(action).sum(axis=-1)
    return backward - tilt - effort, {"backward_speed": backward, "tilt": -tilt, "effort": -effort}

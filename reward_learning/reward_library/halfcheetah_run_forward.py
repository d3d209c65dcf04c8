"""Goal: make the cheetah run forward as fast as possible
Env: HalfCheetah-v5
"""
import numpy as np


def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
    speed = field(next_obs, "x_velocity")
    effort = 0.1 * np.square(action).sum(axis=-1)
    return speed - effort, {"speed": speed, "effort": -effort}

"""Goal: walk forward at a steady pace of about 2 m/s with the torso upright
Env: Walker2d-v5
"""
import numpy as np


def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
    pace = np.exp(-np.square(field(next_obs, "x_velocity") - 2.0))
    upright = np.exp(-4.0 * np.square(field(next_obs, "torso_angle")))
    height = np.clip(field(next_obs, "torso_height") - 0.8, 0.0, 0.5)
    effort = 0.001 * np.square(action).sum(axis=-1)
    reward = pace + 0.5 * upright + height - effort
    return reward, {"pace": pace, "upright": upright, "height": height, "effort": -effort}

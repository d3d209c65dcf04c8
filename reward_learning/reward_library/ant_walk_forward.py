"""Goal: make the ant walk forward along x without drifting sideways
Env: Ant-v5
"""
import numpy as np


def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
    forward = field(next_obs, "x_velocity")
    drift = np.abs(field(next_obs, "y_velocity"))
    healthy = 1.0 - terminated if terminated is not None else np.ones(len(obs))
    effort = 0.5 * np.square(action).sum(axis=-1)
    reward = forward - 0.5 * drift + healthy - effort
    return reward, {"forward": forward, "drift": -drift, "healthy": healthy, "effort": -effort}

"""Goal: hop forward quickly while staying upright and healthy
Env: Hopper-v5
"""
import numpy as np


def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
    speed = field(next_obs, "x_velocity")
    alive = np.where(terminated, 0.0, 1.0) if terminated is not None else np.ones(len(obs))
    upright = -np.abs(field(next_obs, "torso_angle"))
    effort = 0.001 * np.square(action).sum(axis=-1)
    reward = speed + alive + upright - effort
    return reward, {"speed": speed, "alive": alive, "upright": upright, "effort": -effort}

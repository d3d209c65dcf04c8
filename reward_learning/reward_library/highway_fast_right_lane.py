"""Goal: drive fast, keep to the right lane and never crash
Env: highway/highway-fast-v0
"""
import numpy as np


def compute_dense_reward(obs, action, next_obs, terminated=None, collision=None, speed=None, right_lane=None,
                         **named):
    crash = collision if collision is not None else np.zeros(len(obs))
    fast = speed if speed is not None else field(next_obs, "ego_vx")
    lane = right_lane if right_lane is not None else np.zeros(len(obs))
    reward = 0.6 * fast + 0.2 * lane - 2.0 * crash
    return reward, {"speed": fast, "right_lane": lane, "crash": -crash}

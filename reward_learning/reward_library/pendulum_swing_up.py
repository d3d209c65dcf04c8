"""Goal: swing the pendulum up and keep it balanced upright with little torque
Env: Pendulum-v1
"""
import numpy as np


def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
    upright = field(next_obs, "cos_theta")
    spin = 0.1 * np.square(field(next_obs, "angular_velocity"))
    torque = 0.001 * np.square(action).sum(axis=-1)
    return upright - spin - torque, {"upright": upright, "spin": -spin, "torque": -torque}

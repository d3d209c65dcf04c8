"""Goal: jump as high as possible in place without falling over
Env: Hopper-v5
"""
import numpy as np


def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
    height = field(next_obs, "torso_height") - 1.25
    rise = np.clip(field(next_obs, "z_velocity"), 0.0, None)
    drift = np.abs(field(next_obs, "x_velocity"))
    fall = 10.0 * terminated if terminated is not None else 0.0
    reward = 2.0 * height + 0.5 * rise - 0.5 * drift - fall
    return reward, {"height": height, "rise": rise, "drift": -drift}

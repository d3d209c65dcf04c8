"""Goal: move the gripper to the goal position
Env: metaworld/reach-v3
"""
import numpy as np


def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
    distance = np.linalg.norm(field(next_obs, "hand_pos") - field(next_obs, "goal_pos"), axis=-1)
    reach = np.exp(-10.0 * distance)
    effort = 0.01 * np.square(action[:, :3]).sum(axis=-1)
    return reach - effort, {"reach": reach, "distance": distance, "effort": -effort}

"""Goal: pick up the object and place it at the goal position
Env: metaworld/pick-place-v3
"""
import numpy as np


def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
    hand, obj, goal = field(next_obs, "hand_pos"), field(next_obs, "obj1_pos"), field(next_obs, "goal_pos")
    hand_to_obj = np.linalg.norm(hand - obj, axis=-1)
    obj_to_goal = np.linalg.norm(obj - goal, axis=-1)
    reach = 1.0 - np.tanh(10.0 * hand_to_obj)
    grasped = (hand_to_obj < 0.03) & (field(next_obs, "gripper_openness") < 0.6)
    lifted = np.clip(obj[:, 2] - 0.04, 0.0, 0.1) * 10.0 * grasped
    place = (1.0 - np.tanh(5.0 * obj_to_goal)) * grasped
    reward = reach + lifted + 5.0 * place
    return reward, {"reach": reach, "lift": lifted, "place": place}

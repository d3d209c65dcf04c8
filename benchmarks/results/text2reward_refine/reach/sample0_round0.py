import numpy as np

def compute_reward_improved(reward):
    """
    Rewrite the reward to reduce the impact of terms that are always the same value (mean, max, min)
    to the original reward.
    """
    if not (isinstance(reward, (float, int)) and reward!= 0):
        return reward
    term_values = [(0.01, 9.7), (1, 1e-6), (2, 1e-6), (3, 1e-6)]
    for term in term_values:
        reward_improved = (reward - reward_baseline) / (reward + 1.0) * 0.01
    return reward_improved

def compute_reward_baseline(reward):
    """
    Rewrite the reward to reduce the impact of terms that are always the same value (mean, max, min)
    to the original reward.
    """
    return 0.0


# ---- observation fields of metaworld/reach-v3, added by robotrl: field(x, name) reads a named part of obs or next_obs ----
OBS_FIELDS = {
    "hand_pos": lambda x: x[:, 0:3],
    "gripper_openness": lambda x: x[:, 3],
    "obj1_pos": lambda x: x[:, 4:7],
    "obj1_quat": lambda x: x[:, 7:11],
    "obj2_pos": lambda x: x[:, 11:14],
    "obj2_quat": lambda x: x[:, 14:18],
    "prev_hand_pos": lambda x: x[:, 18:21],
    "prev_gripper_openness": lambda x: x[:, 21],
    "prev_obj1_pos": lambda x: x[:, 22:25],
    "prev_obj1_quat": lambda x: x[:, 25:29],
    "prev_obj2_pos": lambda x: x[:, 29:32],
    "prev_obj2_quat": lambda x: x[:, 32:36],
    "goal_pos": lambda x: x[:, 36:39],
}


def field(x, name):
    assert name in OBS_FIELDS, "unknown observation field '" + str(name) + "'; fields: hand_pos, gripper_openness, obj1_pos, obj1_quat, obj2_pos, obj2_quat, prev_hand_pos, prev_gripper_openness, prev_obj1_pos, prev_obj1_quat, prev_obj2_pos, prev_obj2_quat, goal_pos"
    return OBS_FIELDS[name](x)

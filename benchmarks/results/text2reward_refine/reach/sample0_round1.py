import numpy as np

def compute_dense_reward(obs, action, next_obs, **kwargs):
    """
    Rewrite the reward to reduce the impact of terms that are always the same value (mean, max, min) to the original reward.
    """
    if not (isinstance(obs, (float, int)) and isinstance(next_obs, (list, tuple))) and type(next_obs) == (list, tuple):
        return np.zeros(shape=(1,))
    return compute_dense_reward(next_obs, action, next_obs, **kwargs)


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

import numpy as np

def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
    """
    Compute the reward for picking up the object.
    """
    distance = np.linalg.norm(field(next_obs, "hand_pos"), axis=-1)
    goal = np.linalg.norm(obj_to_goal, axis=-1)
    hand_to_obj = np.linalg.norm(hand_to_obj_to_goal, axis=-1)
    goal_to_obj_norm = goal_to_obj_to_goal_norm = np.linalg.norm(goal_to_obj_norm, axis=-1)
    hand_to_obj_to_obj_norm = hand_to_obj_to_obj_norm_norm = np.linalg.norm(hand_to_obj_to_obj_norm, axis=-1)
    goal_to_obj_to_obj_norm_norm = goal_to_obj_to_obj_norm_norm = np.linalg.norm(goal_to_obj_norm_norm, axis=-1)
    hand_to_obj_to_obj_norm_norm_norm = hand_to_obj_to_obj_norm_norm_norm = np.linalg.norm(hand_to_obj_to_obj_norm, axis=-1)
    return {
        "reach": goal_to_obj_norm_norm, "lift": goal_to_obj_norm_norm, "place": goal_to_obj_norm_norm,
        "grip_hand": goal_to_obj_to_obj_norm, "lift_hand": goal_


# ---- observation fields of metaworld/drawer-open-v3, added by robotrl: field(x, name) reads a named part of obs or next_obs ----
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

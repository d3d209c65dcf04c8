import numpy as np

def compute_dense_reward(obs, action, next_obs, terminated=None, **kwargs):
    """
    Compute the reward function for the goal position (metaworld/pick-place-v3).

    Args:
        -obs: target position, in [0, 1], the hand position of the task's object, in [0, 1]
        action: action to pick up (the goal position is [0, 1])
        next_obs: next pose to pick up (the goal position is [0, 1])
        terminated: bool: [0, 1] (true or false) to indicate the end of the task.

    Returns:
        reward, [float] array: the reward for the goal position (target position) of the task's object,
        [float] array: the reward for the goal position (action to pick up the object) and the goal position itself (goal position),
        the reward for the goal position itself (goal position), [float] array: the reward for the action to pick up the object,
        the reward for the action to pick up the object, [float] array: the reward for the action to pick up the object itself,
        the reward for the object to be picked up by the object's hand, [float] array: the reward for the object's hand being picked up,
        the reward for the object to be picked up by the object's hand, [float] array: the reward for the object's hand being picked up,
        [float] array: the reward for the action to pick up the object, [float] array: the reward for


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

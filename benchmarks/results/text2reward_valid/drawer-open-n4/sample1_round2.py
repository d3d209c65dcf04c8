def compute_dense_reward(obs, action, next_obs, terminated=None, **kwargs):
    """
    Compute the reward function for the goal position (metaworld/pick-place-v3).
    """
    reward, reward_target = compute_reward_target, compute_reward_target
    reward_target = reward_target if terminated else reward_target
    return reward_target + reward, reward_target

def compute_reward_target(obs, action):
    """Compute the reward function for the goal position (metaworld/pick-place-v3)
    """
    reward, reward_target = compute_reward_target, compute_reward_target
    return reward_target + reward, reward_target

def compute_reward_target(obs, action):
    """Compute the reward function for the action to pick up the object
    """
    action_reward = action_reward if terminated else action_reward_target
    return action_reward, action_reward_target

def compute_reward_target(obs, action):
    """Compute the reward function for the action to pick up the object
    """
    action_reward = action_reward_target if terminated else action_reward_target_reward
    return action_reward, action_reward_target

def compute_reward_target_reward(obs, action):
    """Compute the reward function for the action to pick up the object
    """
    action_reward = action_reward_target if terminated else action_reward_target_reward_reward
    return action_reward, action_reward_target

def compute_reward_target_reward_reward_reward(obs, action):
    """Compute the reward function for the action to pick up the object
    """
    action_reward = action_reward_target if


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

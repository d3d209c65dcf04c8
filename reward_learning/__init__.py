"""Reward models, teachers, labels and reward comparison; knows rewards, not agents or simulators."""

from reward_learning.code_check import RewardCodeError, check_code
from reward_learning.sandbox import SandboxedReward, SandboxLimits
from reward_learning.sources import ComponentReward, EnvReward, RewardSource, Transitions
from reward_learning.vlm import (
    OpenCLIPBackend,
    TransformersBackend,
    VLMBackend,
    VLMReward,
    VLMWeightsError,
    build_backend,
    load_transformers_backend,
)
from reward_learning.vlm_teacher import VLMTeacher

__all__ = ["ComponentReward", "EnvReward", "OpenCLIPBackend", "RewardCodeError", "RewardSource", "SandboxLimits",
           "SandboxedReward", "TransformersBackend", "Transitions", "VLMBackend", "VLMReward", "VLMTeacher",
           "VLMWeightsError", "build_backend", "check_code", "load_transformers_backend"]

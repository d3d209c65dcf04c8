"""Reward models, teachers, labels and reward comparison; knows rewards, not agents or simulators."""

from reward_learning.code_check import RewardCodeError, check_code
from reward_learning.env_descriptions import TaskDescription, describe_task
from reward_learning.llm import (
    LLMError,
    LocalLLMClient,
    OpenAICompatibleClient,
    ResponseCache,
    SamplingSettings,
    make_client,
)
from reward_learning.sandbox import SandboxedReward, SandboxLimits
from reward_learning.sources import ComponentReward, EnvReward, RewardSource, Transitions
from reward_learning.text2reward import (
    GenerationConfig,
    GenerationResult,
    TrainingFeedback,
    generate_reward,
    refine_reward,
)
from reward_learning.vlm import (
    FrameReward,
    OpenCLIPBackend,
    TransformersBackend,
    VLMBackend,
    VLMReward,
    VLMWeightsError,
    build_backend,
    load_transformers_backend,
)
from reward_learning.vlm_success import SuccessClassifier
from reward_learning.vlm_teacher import VLMTeacher

__all__ = ["ComponentReward", "EnvReward", "FrameReward", "GenerationConfig", "GenerationResult", "LLMError",
           "LocalLLMClient", "OpenAICompatibleClient", "OpenCLIPBackend", "ResponseCache", "RewardCodeError",
           "RewardSource", "SamplingSettings", "SandboxLimits", "SandboxedReward", "SuccessClassifier",
           "TaskDescription", "TrainingFeedback", "TransformersBackend", "Transitions", "VLMBackend", "VLMReward",
           "VLMTeacher", "VLMWeightsError", "build_backend", "check_code", "describe_task", "generate_reward",
           "load_transformers_backend", "make_client", "refine_reward"]

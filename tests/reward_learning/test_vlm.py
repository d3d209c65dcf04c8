"""Vision-language rewards: the VLM-RM formula, prompt caching, batching, the tiny random CLIP, and clear errors."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from reward_learning.vlm import (
    MODEL_PATH_ENV,
    VLMBackend,
    VLMReward,
    VLMWeightsError,
    build_backend,
    goal_baseline_reward,
    load_transformers_backend,
    normalize,
    preprocess_frames,
    projection,
)


class FixedBackend(VLMBackend):
    """Hand-set embeddings: prompts map to given vectors, a frame's first pixel value picks an image vector."""

    name = "fixed"
    image_size = 4

    def __init__(self, texts: dict[str, Sequence[float]], images: torch.Tensor) -> None:
        self.texts = {k: normalize(torch.tensor(v, dtype=torch.float32)) for k, v in texts.items()}
        self.images = normalize(images)
        self.text_calls = 0
        self.image_calls = 0
        self.device = torch.device("cpu")

    def embed_images(self, frames):
        self.image_calls += 1
        return self.images[torch.as_tensor(frames)[:, 0, 0, 0].long()]

    def embed_texts(self, texts):
        self.text_calls += 1
        return torch.stack([self.texts[t] for t in texts])


def frames_for(count: int) -> np.ndarray:
    """Frames whose first pixel is their index (FixedBackend's lookup key)."""
    frames = np.zeros((count, 4, 4, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(count)
    return frames


@pytest.fixture
def backend() -> FixedBackend:
    gen = torch.Generator().manual_seed(0)
    texts = {"goal": [1, 0, 0, 0, 0], "goal 2": [0.8, 0.6, 0, 0, 0], "base": [0, 0, 1, 0, 0],
             "base 2": [0, 0, 0.6, 0.8, 0]}
    return FixedBackend(texts, torch.randn(20, 5, generator=gen))


def test_alpha_zero_is_the_cosine_to_a_single_goal(backend):
    reward = VLMReward(backend, ["goal"], ["base"], alpha=0.0)
    got = reward.score_frames(frames_for(20))
    expected = backend.images @ backend.texts["goal"]
    torch.testing.assert_close(got, expected)


def test_alpha_one_keeps_only_the_goal_baseline_direction(backend):
    reward = VLMReward(backend, ["goal"], ["base"], alpha=1.0)
    g, b = backend.texts["goal"], backend.texts["base"]
    direction = (g - b) / (g - b).norm()
    s = backend.images
    expected = 1 - 0.5 * ((s - g) @ direction) ** 2
    torch.testing.assert_close(reward.score_embeddings(s), expected)
    # moving s orthogonally to the goal-baseline direction changes nothing
    orthogonal = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])
    torch.testing.assert_close(reward.score_embeddings(s + 0.3 * orthogonal), expected)


def test_intermediate_alpha_matches_the_papers_formula(backend):
    alpha = 0.3
    reward = VLMReward(backend, ["goal", "goal 2"], ["base", "base 2"], alpha=alpha)
    g = (backend.texts["goal"] + backend.texts["goal 2"]) / 2  # the mean, not re-normalised
    b = (backend.texts["base"] + backend.texts["base 2"]) / 2
    d = g - b
    s = backend.images
    on_line = g + ((s - g) @ d)[:, None] * d / d.dot(d)  # projection of s onto the line through b and g
    expected = 1 - 0.5 * (alpha * on_line + (1 - alpha) * s - g).pow(2).sum(-1)
    torch.testing.assert_close(reward.score_embeddings(s), expected)
    torch.testing.assert_close(goal_baseline_reward(s, g, projection(g, b, alpha)), expected)


def test_invariant_to_prompt_order(backend):
    frames = frames_for(20)
    one = VLMReward(backend, ["goal", "goal 2"], ["base", "base 2"], alpha=0.5).score_frames(frames)
    two = VLMReward(backend, ["goal 2", "goal"], ["base 2", "base"], alpha=0.5).score_frames(frames)
    torch.testing.assert_close(one, two)


def test_prompts_embedded_once_and_frames_in_batches(backend):
    reward = VLMReward(backend, ["goal"], ["base"], alpha=0.5, batch_size=8)
    for _ in range(3):
        reward.score_frames(frames_for(20))
    assert backend.text_calls == 1
    assert backend.image_calls == 3 * 3  # 20 frames in batches of 8


def test_bad_settings_fail_clearly(backend):
    with pytest.raises(ValueError, match="baseline prompts"):
        VLMReward(backend, ["goal"], [], alpha=0.5)
    with pytest.raises(ValueError, match="goal prompt"):
        VLMReward(backend, [], ["base"])
    with pytest.raises(ValueError, match="same point"):
        VLMReward(backend, ["goal"], ["goal"], alpha=0.5).score_frames(frames_for(2))


def test_preprocessing_resizes_crops_and_normalises():
    frames = np.full((2, 30, 60, 3), 51, dtype=np.uint8)
    frames[:, :, :15] = 0  # the left quarter is cropped away by a CLIP-style centre crop
    out = preprocess_frames(frames, 16, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), crop=True, device=torch.device("cpu"))
    assert out.shape == (2, 3, 16, 16)
    expected = (0.2 - torch.tensor([0.5, 0.4, 0.3])) / 0.2
    torch.testing.assert_close(out[0, :, 8, 8], expected, atol=1e-5, rtol=0)
    squashed = preprocess_frames(frames, 16, (0.5,) * 3, (0.5,) * 3, crop=False, device=torch.device("cpu"))
    assert squashed.shape == (2, 3, 16, 16) and squashed[0, 0, 8, 0] < squashed[0, 0, 8, 15]


# ----------------------------------------------------------------------------------------- the tiny random CLIP
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    pytest.importorskip("transformers")
    from reward_learning.vlm_tiny import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", prompts=["a humanoid robot kneeling"])


def test_tiny_clip_batched_scoring_equals_per_frame(tiny_clip):
    backend = load_transformers_backend(tiny_clip, device="cpu")
    reward = VLMReward(backend, ["a humanoid robot kneeling"], ["a humanoid robot"], alpha=0.5, batch_size=4)
    frames = np.random.default_rng(0).integers(0, 256, (10, 40, 56, 3), dtype=np.uint8)
    batched = reward.score_frames(frames)
    assert batched.shape == (10,) and batched.dtype == torch.float32 and torch.isfinite(batched).all()
    single = torch.cat([reward.score_frames(frames[i:i + 1]) for i in range(10)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    embedded = backend.embed_images(frames)
    torch.testing.assert_close(embedded.norm(dim=-1), torch.ones(10))
    assert reward({"frames": torch.as_tensor(frames)}).shape == (10,)


def test_bfloat16_autocast_stays_close_to_float32(tiny_clip):
    frames = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    full = load_transformers_backend(tiny_clip, precision="float32").embed_images(frames)
    half = load_transformers_backend(tiny_clip, precision="bfloat16").embed_images(frames)
    assert half.dtype == torch.float32
    assert (full * half).sum(-1).min() > 0.99  # cosine similarity of the two embeddings
    with pytest.raises(ValueError, match="precision"):
        load_transformers_backend(tiny_clip, precision="float8")


def test_siglip_directories_load_with_their_own_preprocessing(tmp_path):
    pytest.importorskip("transformers")
    from transformers import SiglipConfig, SiglipModel

    from reward_learning.vlm_tiny import word_tokenizer

    tokenizer = word_tokenizer()
    shared = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = SiglipConfig(text_config={**shared, "vocab_size": len(tokenizer), "max_position_embeddings": 16},
                          vision_config={**shared, "image_size": 32, "patch_size": 8})
    torch.manual_seed(0)
    SiglipModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    backend = load_transformers_backend(tmp_path)
    assert (backend.mean, backend.crop, backend.pad_to_max_length) == ((0.5, 0.5, 0.5), False, True)
    reward = VLMReward(backend, ["a humanoid robot kneeling"], ["a humanoid robot"], alpha=0.5)
    rewards = reward.score_frames(np.zeros((3, 40, 50, 3), dtype=np.uint8))
    assert rewards.shape == (3,) and torch.isfinite(rewards).all()


def test_missing_model_path_says_how_to_supply_weights(monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    monkeypatch.delenv(MODEL_PATH_ENV, raising=False)
    with pytest.raises(VLMWeightsError, match=MODEL_PATH_ENV):
        load_transformers_backend(None)
    with pytest.raises(VLMWeightsError, match="not a local directory"):
        load_transformers_backend(tmp_path / "nowhere")
    with pytest.raises(VLMWeightsError, match="could not load"):
        load_transformers_backend(tmp_path)  # a directory without a model


def test_model_path_falls_back_to_the_environment_variable(monkeypatch, tiny_clip):
    monkeypatch.setenv(MODEL_PATH_ENV, str(tiny_clip))
    assert build_backend("transformers", None, "cpu").image_size == 32


def test_broken_tiny_tokenizer_is_detected(tiny_clip, tmp_path):
    import shutil

    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    broken = tmp_path / "broken"
    shutil.copytree(tiny_clip, broken)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).unlink()
    core = Tokenizer(WordLevel({"<unk>": 0, "<pad>": 1}, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>").save_pretrained(broken)
    with pytest.raises(VLMWeightsError, match="only 2 tokens"):
        load_transformers_backend(broken)


def test_open_clip_backend_explains_a_missing_install():
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(VLMWeightsError, match="open_clip_torch"):
            build_backend("open_clip", "/nowhere.pt", "cpu", model_name="ViT-B-32")
    else:
        pytest.skip("open_clip is installed")


@pytest.mark.skipif(not os.environ.get(MODEL_PATH_ENV), reason=f"set {MODEL_PATH_ENV} to a local CLIP directory "
                    "to test real weights")
def test_real_weights_prefer_the_matching_colour():
    backend = load_transformers_backend(None, device="cpu")
    red = np.zeros((1, 224, 224, 3), dtype=np.uint8)
    red[..., 0] = 220
    blue = np.zeros_like(red)
    blue[..., 2] = 220
    frames = np.concatenate([red, blue])
    red_reward = VLMReward(backend, ["a plain red image"], ["a plain image"], alpha=0.5).score_frames(frames)
    blue_reward = VLMReward(backend, ["a plain blue image"], ["a plain image"], alpha=0.5).score_frames(frames)
    assert red_reward[0] > red_reward[1] and blue_reward[1] > blue_reward[0]


# ---------------------------------------------------------------------------------------- the VLM as a teacher
def segments_with_states(state_values: np.ndarray):
    """Segments [q, L] whose simulator state is one number: the FixedBackend image index of its frame."""
    from reward_learning.segments import Segments

    q, length = state_values.shape
    zeros = torch.zeros(q, length)
    return Segments(obs=zeros[..., None], action=zeros[..., None], next_obs=zeros[..., None], env_reward=zeros,
                    components=zeros[..., None], episode=torch.arange(q), start=torch.zeros(q, dtype=torch.long),
                    state=torch.as_tensor(state_values, dtype=torch.float64)[..., None])


def render_indices(states: np.ndarray) -> np.ndarray:
    return frames_for(20)[states[:, 0].astype(int)]


def test_vlm_teacher_prefers_the_segment_whose_frames_look_like_the_goal(backend):
    from reward_learning.segments import Label
    from reward_learning.vlm_teacher import VLMTeacher

    reward = VLMReward(backend, ["goal"], ["base"], alpha=0.5)
    scores = reward.score_frames(frames_for(20))
    order = torch.argsort(scores).numpy()  # image indices from worst to best
    left = segments_with_states(np.array([[order[19]] * 3 + [order[0]], [order[0]] * 3 + [order[19]]]))
    right = segments_with_states(np.array([[order[0]] * 3 + [order[19]], [order[19]] * 3 + [order[0]]]))
    rng = np.random.default_rng(0)
    # judged on the final frame (RL-VLM-F), then on the mean over all four frames
    assert VLMTeacher(reward, render_indices).label(left, right, rng).tolist() == [Label.RIGHT, Label.LEFT]
    assert VLMTeacher(reward, render_indices, frames=4).label(left, right, rng).tolist() == [Label.LEFT, Label.RIGHT]
    huge_margin = VLMTeacher(reward, render_indices, margin=10.0)
    assert (huge_margin.label(left, right, rng) == Label.SKIP).all()


def test_vlm_teacher_needs_recorded_states(backend):
    from reward_learning.vlm_teacher import VLMTeacher

    no_states = segments_with_states(np.zeros((2, 3)))
    no_states.state = torch.zeros(2, 3, 0, dtype=torch.float64)
    with pytest.raises(ValueError, match="record_states"):
        VLMTeacher(VLMReward(backend, ["goal"]), render_indices).label(no_states, no_states, np.random.default_rng(0))

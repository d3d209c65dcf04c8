"""Vision-language models as rewards (VLM-RM, Rocamonde et al. 2023): CLIP/SigLIP embeddings scored against prompts.

`VLMBackend` turns uint8 frames and prompts into unit-norm embeddings; `TransformersBackend` runs a CLIP or SigLIP
model from a local `transformers` directory and `OpenCLIPBackend` an open_clip checkpoint (only if open_clip is
installed). Preprocessing is our own (torch resize + normalise), so torchvision is never needed. `VLMReward` is the
goal-baseline regularised reward

    reward(s) = 1 - 1/2 |(s - g)(alpha P + (1 - alpha) I)|^2,   P = d d^T / |d|^2,  d = g - b,

with s the unit image embedding, g (b) the mean of the unit goal (baseline) prompt embeddings. alpha = 0 gives
cos(s, g) when g is unit norm; alpha = 1 keeps only the component of s - g along the goal-baseline direction.
No weights ship with robotrl: users point `model_path` (or ROBOTRL_CLIP_PATH) at real ones; `build_tiny_clip`
writes a small randomly initialised CLIP for tests and demos.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reward_learning.sources import RewardSource, Transitions

MODEL_PATH_ENV = "ROBOTRL_CLIP_PATH"
"""Environment variable naming a local model directory (or checkpoint) when the config gives no `model_path`."""

MIN_TOKENIZER_VOCAB = 16
"""Fewer tokens than this means a broken tokenizer (offline hub look-ups silently return a 2-token one)."""

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)

HOW_TO_SUPPLY = (
    "Download CLIP or SigLIP weights on a machine with internet, e.g. `hf download "
    "openai/clip-vit-base-patch32 --local-dir /models/clip-b32` (transformers backend) or an open_clip .pt checkpoint, "
    f"copy them here, and point reward.vlm.model_path (or the {MODEL_PATH_ENV} environment variable) at them. "
    "For tests and demos, `python -m reward_learning.vlm_tiny DIR` writes a small random CLIP (meaningless rewards)."
)

Frames = np.ndarray | torch.Tensor
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class VLMWeightsError(RuntimeError):
    """Model weights or tokenizer missing, unreadable or broken; the message says how to supply working ones."""


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (in float32)."""
    return F.normalize(x.float(), dim=-1)


def preprocess_frames(frames: Frames, size: int, mean: Sequence[float], std: Sequence[float], crop: bool,
                      device: torch.device) -> torch.Tensor:
    """uint8 [N, H, W, 3] frames -> normalised float [N, 3, size, size] model input, all in torch.

    `crop`: CLIP-style (resize the short side to `size`, then centre-crop); otherwise SigLIP-style (resize both sides).
    """
    x = torch.as_tensor(frames, device=device)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [N, H, W, 3]; got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    height, width = x.shape[-2:]
    if crop:
        scale = size / min(height, width)
        target = (max(size, round(height * scale)), max(size, round(width * scale)))
    else:
        target = (size, size)
    if target != (height, width):
        x = F.interpolate(x, size=target, mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    top, left = (target[0] - size) // 2, (target[1] - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean_t = torch.tensor(mean, device=device, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, device=device, dtype=torch.float32)[:, None, None]
    return (x - mean_t) / std_t


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed precision for the model's forward pass: float32 (off), bfloat16 (~3x faster on CPUs with AMX) or
    float16 (GPUs). Embeddings are returned in float32 either way."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return torch.autocast(device.type, dtype=PRECISIONS[precision] or torch.bfloat16,
                          enabled=PRECISIONS[precision] is not None)


def choose_device(device: torch.device | str) -> torch.device:
    """`auto` means a GPU when torch sees one; anything else is passed to torch.device."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class VLMBackend(ABC):
    """A vision-language model that embeds frames and texts into one space (rows unit-norm, float32)."""

    name: str = "vlm"
    image_size: int
    device: torch.device

    @abstractmethod
    def embed_images(self, frames: Frames) -> torch.Tensor:
        """uint8 frames [N, H, W, 3] -> unit-norm embeddings [N, D]."""

    @abstractmethod
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Prompts -> unit-norm embeddings [len(texts), D]."""


def _features(output: Any) -> torch.Tensor:
    """The projected embedding from `get_*_features` (a tensor in transformers 4, a pooled output object in 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class TransformersBackend(VLMBackend):
    """A `transformers` CLIP or SigLIP model (any model with `get_image_features` / `get_text_features`)."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, *, image_size: int, mean: Sequence[float], std: Sequence[float],
                 crop: bool, pad_to_max_length: bool = False, device: torch.device | str = "cpu",
                 precision: str = "float32", source: str = "the model") -> None:
        """Wrap a loaded model; `crop` and `pad_to_max_length` follow how the model family was trained; `source`
        names the model in error messages."""
        self.device = choose_device(device)
        self.precision = precision
        autocast(self.device, precision)  # validate early
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean, self.std, self.crop = tuple(mean), tuple(std), crop
        self.pad_to_max_length = pad_to_max_length
        check_tokenizer(tokenizer, _text_vocab_size(model.config), source)

    @torch.no_grad()
    def embed_images(self, frames: Frames) -> torch.Tensor:
        pixels = preprocess_frames(frames, self.image_size, self.mean, self.std, self.crop, self.device)
        with autocast(self.device, self.precision):
            return normalize(_features(self.model.get_image_features(pixel_values=pixels)))

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        padding: str | bool = "max_length" if self.pad_to_max_length else True
        max_length = _text_config(self.model.config).max_position_embeddings
        tokens = self.tokenizer(list(texts), padding=padding, truncation=True, max_length=max_length,
                                return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        if self.pad_to_max_length:  # SigLIP was trained without an attention mask over its padding
            inputs.pop("attention_mask", None)
        with autocast(self.device, self.precision):
            return normalize(_features(self.model.get_text_features(**inputs)))


def _text_config(config: Any) -> Any:
    return getattr(config, "text_config", config)


def _text_vocab_size(config: Any) -> int | None:
    return getattr(_text_config(config), "vocab_size", None)


def check_tokenizer(tokenizer: Any, model_vocab: int | None, source: str) -> None:
    """Fail clearly on the broken tiny tokenizer that offline hub look-ups return, or one not made for the model."""
    size = len(tokenizer)
    if size < MIN_TOKENIZER_VOCAB:
        raise VLMWeightsError(
            f"the tokenizer of {source} has only {size} tokens, so it is broken (offline look-ups of a hub name such "
            f"as 'openai/clip-vit-base-patch32' silently return a 2-token tokenizer). Load it from a local directory "
            f"that holds the tokenizer files. {HOW_TO_SUPPLY}")
    if model_vocab is not None and size > model_vocab:
        raise VLMWeightsError(f"the tokenizer of {source} has {size} tokens but the text model only {model_vocab}: "
                              f"tokenizer and weights do not belong together. {HOW_TO_SUPPLY}")


def resolve_model_path(model_path: str | os.PathLike[str] | None) -> str:
    """`model_path`, else $ROBOTRL_CLIP_PATH; a clear error when neither is given."""
    chosen = model_path if model_path not in (None, "") else os.environ.get(MODEL_PATH_ENV)
    if not chosen:
        raise VLMWeightsError(f"no vision-language model given: set reward.vlm.model_path or {MODEL_PATH_ENV}. "
                              f"{HOW_TO_SUPPLY}")
    return str(chosen)


def _preprocessor_settings(path: Path | None, model_type: str) -> tuple[tuple, tuple, bool]:
    """(mean, std, crop) from a local directory's preprocessor_config.json, else the model family's defaults."""
    siglip = model_type.startswith("siglip")
    mean, std = (SIGLIP_MEAN, SIGLIP_STD) if siglip else (CLIP_MEAN, CLIP_STD)
    settings_file = path / "preprocessor_config.json" if path is not None else None
    if settings_file is not None and settings_file.is_file():
        settings = json.loads(settings_file.read_text())
        mean, std = tuple(settings.get("image_mean", mean)), tuple(settings.get("image_std", std))
    return mean, std, not siglip


def load_transformers_backend(model_path: str | os.PathLike[str] | None = None, device: torch.device | str = "cpu",
                              allow_download: bool = False, precision: str = "float32") -> TransformersBackend:
    """Load a CLIP or SigLIP model and its tokenizer from a local directory (or, with `allow_download` and a network,
    from a hub name). Any failure raises `VLMWeightsError` explaining how to supply the weights."""
    try:
        import transformers
    except ImportError as err:
        raise VLMWeightsError("the transformers backend needs `pip install 'robotrl[vlm]'` (transformers, "
                              "tokenizers, safetensors)") from err
    name = resolve_model_path(model_path)
    local = Path(name).expanduser()
    if local.is_dir():
        source, local_only = str(local), True
    elif allow_download and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false"):
        source, local_only = name, False
    else:
        raise VLMWeightsError(f"model_path '{name}' is not a local directory (downloads are off: set "
                              f"reward.vlm.allow_download=true to fetch a hub name when online). {HOW_TO_SUPPLY}")
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=local_only)
        model_type = str(config.model_type)
        model_class = {"clip": transformers.CLIPModel, "siglip": transformers.SiglipModel}.get(
            model_type, transformers.AutoModel)
        model = model_class.from_pretrained(source, local_files_only=local_only)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError, KeyError) as err:
        raise VLMWeightsError(f"could not load a vision-language model from '{name}' ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}). {HOW_TO_SUPPLY}") from err
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise VLMWeightsError(f"'{name}' holds a {type(model).__name__}, not a CLIP-like model with image and text "
                              f"towers. {HOW_TO_SUPPLY}")
    image_size = int(getattr(config, "vision_config", config).image_size)
    mean, std, crop = _preprocessor_settings(local if local_only else None, model_type)
    return TransformersBackend(model, tokenizer, image_size=image_size, mean=mean, std=std, crop=crop,
                               pad_to_max_length=model_type.startswith("siglip"), device=device, precision=precision,
                               source=f"'{name}'")


class OpenCLIPBackend(VLMBackend):
    """An open_clip model (architecture `model_name`, weights from a local checkpoint file). open_clip is optional:
    it needs torchvision, whose PyPI build does not import next to a CPU-only torch, so it is imported lazily."""

    name = "open_clip"

    def __init__(self, model_name: str, checkpoint: str | os.PathLike[str] | None,
                 device: torch.device | str = "cpu", precision: str = "float32") -> None:
        try:
            import open_clip
        except ImportError as err:
            raise VLMWeightsError("backend open_clip needs the open_clip_torch package, which is not installed (it "
                                  "pulls torchvision and may replace a CPU torch with a CUDA build); install it with "
                                  "care, or use backend: transformers") from err
        path = Path(resolve_model_path(checkpoint)).expanduser()
        if not path.is_file():
            raise VLMWeightsError(f"open_clip checkpoint '{path}' is not a file. {HOW_TO_SUPPLY}")
        self.device = choose_device(device)
        self.precision = precision
        try:
            model = open_clip.create_model(model_name, pretrained=str(path), device=self.device)
        except (RuntimeError, OSError, ValueError) as err:
            raise VLMWeightsError(f"open_clip could not load {model_name} from '{path}': {err}. {HOW_TO_SUPPLY}") \
                from err
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        size = self.model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        self.mean, self.std = tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))

    @torch.no_grad()
    def embed_images(self, frames: Frames) -> torch.Tensor:
        pixels = preprocess_frames(frames, self.image_size, self.mean, self.std, True, self.device)
        with autocast(self.device, self.precision):
            return normalize(self.model.encode_image(pixels))

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return normalize(self.model.encode_text(self.tokenizer(list(texts)).to(self.device)))


def build_backend(backend: str, model_path: str | None, device: torch.device | str = "auto",
                  model_name: str | None = None, allow_download: bool = False, precision: str = "float32"
                  ) -> VLMBackend:
    """The configured backend: `transformers` (a model directory) or `open_clip` (`model_name` + checkpoint)."""
    if backend == "transformers":
        return load_transformers_backend(model_path, device, allow_download, precision)
    if backend == "open_clip":
        if not model_name:
            raise ValueError("backend open_clip needs model_name (the architecture, e.g. ViT-B-32)")
        return OpenCLIPBackend(model_name, model_path, device, precision)
    raise ValueError(f"unknown VLM backend {backend!r}: use transformers or open_clip")


def goal_baseline_reward(images: torch.Tensor, goal: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """VLM-RM's reward 1 - |(s - g) M|^2 / 2 for unit image embeddings s [N, D], the mean goal embedding g [D] and
    M = `projection(g, b, alpha)`."""
    return 1.0 - 0.5 * ((images - goal) @ matrix).pow(2).sum(-1)


def projection(goal: torch.Tensor, baseline: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """alpha P + (1 - alpha) I, with P the projector onto the goal-baseline direction ([D, D])."""
    eye = torch.eye(goal.shape[-1], device=goal.device, dtype=goal.dtype)
    if alpha == 0.0:
        return eye
    if baseline is None:
        raise ValueError("alpha > 0 needs baseline prompts (the direction it keeps is goal - baseline)")
    direction = goal - baseline
    norm2 = direction.pow(2).sum()
    if norm2 < 1e-12:
        raise ValueError("goal and baseline prompts embed to the same point: the goal-baseline direction is undefined")
    return alpha * torch.outer(direction, direction) / norm2 + (1.0 - alpha) * eye


@torch.no_grad()
def embed_frames(backend: VLMBackend, frames: Frames, batch_size: int) -> torch.Tensor:
    """Unit image embeddings [N, D] (float32, CPU) of uint8 frames [N, H, W, 3], `batch_size` frames per model call."""
    return torch.cat([backend.embed_images(frames[start:start + batch_size]).float().cpu()
                      for start in range(0, len(frames), batch_size)])


class FrameReward(RewardSource):
    """A reward of single frames computed from their VLM image embeddings, scored `batch_size` frames per model call.
    Subclasses say how an embedding becomes a reward (`score_embeddings`)."""

    needs = frozenset({"frames"})

    def __init__(self, backend: VLMBackend, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive; got {batch_size}")
        self.backend, self.batch_size = backend, int(batch_size)

    @abstractmethod
    def score_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Rewards [N] for unit image embeddings [N, D]."""

    @torch.no_grad()
    def score_frames(self, frames: Frames) -> torch.Tensor:
        """Rewards [N] (float32, CPU) for uint8 frames [N, H, W, 3], embedded `batch_size` frames per model call."""
        return self.score_embeddings(embed_frames(self.backend, frames, self.batch_size)).float().cpu()

    def __call__(self, batch: Transitions) -> torch.Tensor:
        return self.score_frames(batch["frames"])


class VLMReward(FrameReward):
    """Rewards frames by their similarity to goal prompts, regularised towards the goal-baseline direction.

    Prompt embeddings are computed once (on first use) and cached. Frames are scored in chunks of `batch_size`.
    """

    name = "vlm"

    def __init__(self, backend: VLMBackend, goal_prompts: Sequence[str], baseline_prompts: Sequence[str] = (),
                 alpha: float = 0.0, batch_size: int = 64) -> None:
        if not goal_prompts:
            raise ValueError("VLMReward needs at least one goal prompt")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
        if alpha > 0 and not baseline_prompts:
            raise ValueError("alpha > 0 needs baseline prompts (e.g. 'a humanoid robot')")
        super().__init__(backend, batch_size)
        self.goal_prompts, self.baseline_prompts = list(goal_prompts), list(baseline_prompts)
        self.alpha = float(alpha)
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None

    def prompt_geometry(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(g, alpha P + (1 - alpha) I), embedding the prompts on the first call only."""
        if self._cached is None:
            texts = self.goal_prompts + self.baseline_prompts
            embedded = self.backend.embed_texts(texts)
            goal = embedded[: len(self.goal_prompts)].mean(0)
            baseline = embedded[len(self.goal_prompts):].mean(0) if self.baseline_prompts else None
            self._cached = goal, projection(goal, baseline, self.alpha)
        return self._cached

    def score_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Rewards [N] for unit image embeddings [N, D]."""
        goal, matrix = self.prompt_geometry()
        return goal_baseline_reward(images.to(goal.device), goal, matrix)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "backend": self.backend.name, "goal_prompts": self.goal_prompts,
                "baseline_prompts": self.baseline_prompts, "alpha": self.alpha}

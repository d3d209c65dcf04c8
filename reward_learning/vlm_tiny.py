"""Randomly initialised CLIP models built offline (`build_random_clip`): a tiny one for tests and demos, a
ViT-B/32-sized one for speed measurements. Their rewards carry no meaning; they exercise the loading, batching and
scoring code paths end to end.

The tokenizer is a word-level one we build with the `tokenizers` library (lower-cased, split on whitespace and
punctuation, BOS/EOS added), saved as a `PreTrainedTokenizerFast` so `AutoTokenizer` loads it from the directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from reward_learning.vlm import CLIP_MEAN, CLIP_STD

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
BASE_WORDS = (
    "a an the of on in with and up down to is robot humanoid photo picture car cart pole hill mountain top flag "
    "standing kneeling sitting seated lying fallen balanced upright tilted left right both arms legs hands raised "
    "hips crossed one leg splits side gymnastics practicing doing meditating lotus position floor ground sky"
).split()


def tiny_clip_config(vocab_size: int, image_size: int = 32, eos_token_id: int = 3, bos_token_id: int = 2,
                     pad_token_id: int = 0, width: int = 32, layers: int = 2, patch_size: int = 8,
                     projection_dim: int = 32) -> Any:
    """A small `transformers.CLIPConfig` (a few thousand parameters per tower)."""
    from transformers import CLIPConfig

    shared = {"hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": layers,
              "num_attention_heads": 2}
    text = {**shared, "vocab_size": vocab_size, "max_position_embeddings": 16, "eos_token_id": eos_token_id,
            "bos_token_id": bos_token_id, "pad_token_id": pad_token_id}
    vision = {**shared, "image_size": image_size, "patch_size": patch_size}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def vit_b32_config(vocab_size: int, eos_token_id: int = 3, bos_token_id: int = 2, pad_token_id: int = 0) -> Any:
    """CLIP ViT-B/32's shapes (vision 768 wide, 12 layers, patch 32, 224 px; text 512 wide, 12 layers; 512-d
    embeddings), with a small vocabulary: the embedding table is not what costs time."""
    from transformers import CLIPConfig

    text = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
            "vocab_size": vocab_size, "max_position_embeddings": 77, "eos_token_id": eos_token_id,
            "bos_token_id": bos_token_id, "pad_token_id": pad_token_id}
    vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "image_size": 224, "patch_size": 32}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)


def word_tokenizer(extra_words: Iterable[str] = (), max_length: int = 16) -> Any:
    """A word-level `PreTrainedTokenizerFast` over BASE_WORDS plus `extra_words` (unknown words map to <unk>)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = dict.fromkeys([*BASE_WORDS, *(w for text in extra_words for w in re.findall(r"\w+", text.lower()))])
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>", model_max_length=max_length)


def build_random_clip(directory: str | Path, size: str = "tiny", prompts: Iterable[str] = (), image_size: int = 32,
                      seed: int = 0) -> Path:
    """Write a random CLIP (`size` "tiny", or "vit-b-32" for ViT-B/32's shapes and cost) with a tokenizer knowing
    `prompts`' words and preprocessor settings to `directory`, loadable with `load_transformers_backend(directory)`.
    `image_size` applies to the tiny model only. Returns the directory."""
    from transformers import CLIPModel

    if size not in ("tiny", "vit-b-32"):
        raise ValueError(f"size must be tiny or vit-b-32; got {size!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = word_tokenizer(prompts, max_length=16 if size == "tiny" else 77)
    ids = {f"{name}_token_id": tokenizer.convert_tokens_to_ids(f"<{name}>") for name in ("eos", "bos", "pad")}
    config = tiny_clip_config(len(tokenizer), image_size, **ids) if size == "tiny" else vit_b32_config(
        len(tokenizer), **ids)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    settings = {"image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}
    (directory / "preprocessor_config.json").write_text(json.dumps(settings, indent=1))
    return directory


def build_tiny_clip(directory: str | Path, prompts: Iterable[str] = (), image_size: int = 32, seed: int = 0) -> Path:
    """Write a small random CLIP for tests and demos to `directory` (see `build_random_clip`)."""
    return build_random_clip(directory, "tiny", prompts, image_size, seed)


def main(argv: list[str] | None = None) -> None:
    """`python -m reward_learning.vlm_tiny DIR [--size vit-b-32] [--prompt TEXT ...]`: write a random CLIP to DIR,
    e.g. to try a VLM config end to end (`reward.vlm.model_path=DIR`) before real weights are at hand."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory")
    parser.add_argument("--size", choices=["tiny", "vit-b-32"], default="tiny")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt whose words the tokenizer should know")
    args = parser.parse_args(argv)
    print(build_random_clip(args.directory, args.size, args.prompt))


if __name__ == "__main__":
    main()

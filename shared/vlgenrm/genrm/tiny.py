"""Tiny random vision-language models for tests and the embedded default.

They are real checkpoints in miniature: a byte-level BPE tokenizer trained offline with
``tokenizers`` on the prompts' own vocabulary, an image processor, a chat template, random
weights from a config, saved with ``GenRM.save`` and loaded back through ``GenRM.load``,
the same path a 7B checkpoint takes. Everything is deterministic given the seed.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.families import FAMILIES, Family
from vlgenrm.genrm.model import GenRM, checkpoint_version
from vlgenrm.genrm.prompts import pairwise_messages, pointwise_messages, target_text
from vlgenrm.genrm.verdicts import OPTIONS, Mode

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
LLAVA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]

# ChatML, as Qwen uses; the image placeholder differs per family.
_CHAT = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}IMAGE{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_TEMPLATES = {
    "qwen2_vl": _CHAT.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>"),
    "qwen2_5_vl": _CHAT.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>"),
    "llava": _CHAT.replace("IMAGE", "<image>\n"),
}
WORDS = (
    "red green blue yellow purple orange black white circle square triangle star shape shapes text sign says "
    "one two three four five six seven eight nine ten no a an the is are there image picture shows contains "
    "response better worse accurate wrong correct hallucinates mentions missing color count object because"
).split()


def _domain_text() -> list[str]:
    """Responses, questions and answers of the synthetic domain (fixed seed), so its words —
    synonyms and sign words included — become whole tokens rather than byte runs."""
    import random

    from vlgenrm.synth.responses import random_question, write_faithful, write_hallucinated
    from vlgenrm.synth.scene import random_scene
    from vlgenrm.synth.vocab import COLOUR_SYNONYMS, SHAPE_SYNONYMS, TEXT_WORDS, HallucinationType

    rng = random.Random("tokenizer-corpus")
    lines = [" ".join([*COLOUR_SYNONYMS, *SHAPE_SYNONYMS, *TEXT_WORDS, *(w.title() for w in TEXT_WORDS)])] * 10
    for i in range(300):
        scene = random_scene(rng, text_probability=0.5)
        kind = list(HallucinationType)[i % len(HallucinationType)]
        question = random_question(rng, scene, kind)
        lines += [question.text, write_faithful(scene, question, rng), write_hallucinated(scene, question, kind, rng).text]
    return lines


def _corpus() -> list[str]:
    """Text the tokenizer learns merges from: the prompts, verdicts and domain words."""
    lines = _domain_text()
    for a, b in itertools.combinations(WORDS[:12], 2):
        q = f"What is in the image? Is there a {a} {b}?"
        lines.append(str(pairwise_messages(q, f"A {a} {b}.", f"Two {b} {a}s.")))
        lines.append(str(pointwise_messages(q, f"The image shows a {a} {b}.")))
    for mode in Mode:
        for option in OPTIONS[mode]:
            lines += [target_text(f"Response {option} mentions the {w} shape.", option) for w in WORDS] * 2
    return lines + [" ".join(WORDS)] * 20


def train_tokenizer(family: Family, vocab_size: int = 1024):
    """A byte-level BPE tokenizer wrapped for transformers, with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = LLAVA_SPECIALS if family.name == "llava" else QWEN_SPECIALS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    extra = {"image_token": "<image>"} if family.name == "llava" else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATES[family.name],
        extra_special_tokens=extra,
    )


#: Weight init std of the tiny vision towers (see _qwen).
VISION_INIT_STD = 0.2


@dataclass(frozen=True)
class TinySize:
    """Widths and depths of a tiny model (the defaults: about 0.7 M parameters)."""

    text_layers: int = 2
    vision_width: int = 64
    vision_depth: int = 2
    patch_size: int = 14  # Qwen-family vision patch side in pixels (image tokens = (side / patch / 2)^2)


#: Patch side of the tiny LLaVA's CLIP tower (one image token per patch).
LLAVA_PATCH = 7


def token_px(family: str, size: TinySize | None = None) -> int:
    """Side in pixels of the image one language-model image token covers (Qwen merges 2 x 2 patches)."""
    return LLAVA_PATCH if family == "llava" else 2 * (size or TinySize()).patch_size


def _qwen(family: Family, tokenizer, image_size: int, size: TinySize):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig, Qwen2VLImageProcessorPil

    ids = tokenizer.convert_tokens_to_ids
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_hidden_layers=size.text_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        max_position_embeddings=4096,
        # mrope_section must sum to head_dim / 2 = 16 (DESIGN §8)
        rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]},
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    # A 64-wide tower at the usual initializer_range (0.02) maps every image to nearly the same
    # features: a tiny model then learns whole-image colour but never what one shape looks like
    # (measured: single-shape colour stays at chance for 1,600 steps). 0.2 keeps the patches apart.
    vision = dict(
        depth=size.vision_depth,
        num_heads=4,
        patch_size=size.patch_size,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_channels=3,
        initializer_range=VISION_INIT_STD,
    )
    special = dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    if family.name == "qwen2_vl":
        config = Qwen2VLConfig(text_config=text, vision_config=vision | dict(embed_dim=size.vision_width, hidden_size=128, mlp_ratio=2), **special)
    else:
        config = Qwen2_5_VLConfig(
            text_config=text,
            vision_config=vision
            | dict(
                hidden_size=size.vision_width,
                out_hidden_size=128,
                intermediate_size=2 * size.vision_width,
                window_size=56,
                fullatt_block_indexes=[size.vision_depth - 1],
            ),
            **special,
        )
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels, patch_size=size.patch_size, merge_size=2, temporal_patch_size=2)
    return config, image_processor, {}


def _llava(tokenizer, image_size: int, size: TinySize):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaImageProcessorPil

    ids = tokenizer.convert_tokens_to_ids
    patch = LLAVA_PATCH
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=size.vision_width,
            intermediate_size=2 * size.vision_width,
            num_hidden_layers=size.vision_depth,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=size.text_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        image_token_id=ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    image_processor = LlavaImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    kwargs = dict(patch_size=patch, vision_feature_select_strategy="default", num_additional_image_tokens=1, image_token="<image>")
    return config, image_processor, kwargs


def build_tiny_genrm(directory: str | os.PathLike[str], family: str = "qwen2_vl", *, seed: int = 0, image_size: int = 56, size: TinySize | None = None) -> Path:
    """Build, save and return the folder of a tiny random GenRM of ``family``."""
    from transformers import AutoModelForImageTextToText

    fam = FAMILIES[family]
    tokenizer = train_tokenizer(fam)
    if family == "llava":
        config, image_processor, kwargs = _llava(tokenizer, image_size, size or TinySize())
    else:
        config, image_processor, kwargs = _qwen(fam, tokenizer, image_size, size or TinySize())
    processor = fam.processor_cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATES[family], **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    directory = Path(directory)
    GenRM(model, processor, fam, GenRMSettings(), version="unsaved").save(directory)
    return directory


__all__ = ["LLAVA_PATCH", "TinySize", "build_tiny_genrm", "checkpoint_version", "token_px", "train_tokenizer"]

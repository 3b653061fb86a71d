"""Model families the adapter supports, and how each one's processor is assembled.

Processors are built from their parts (tokenizer, image processor, chat template) rather than
with AutoProcessor: Qwen2-VL's processor insists on a video processor, which needs
torchvision, and a reward model only ever sees images. Saving writes the family's canonical
processor class, so transformers and vLLM load the checkpoint as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import LlavaProcessor, Qwen2_5_VLProcessor, Qwen2VLProcessor

from vlgenrm.genrm.errors import UnsupportedModelError


class Qwen2VLImageProcessor(Qwen2VLProcessor):
    """Qwen2-VL processor for images only (no video processor, hence no torchvision)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any) -> None:
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2_5VLImageProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor for images only."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any) -> None:
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    processor_cls: type
    canonical_processor: str
    #: Positions come from the attention mask inside the model (mRoPE); otherwise the adapter
    #: passes position_ids so left padding does not shift them.
    positions_from_mask: bool
    #: Extra keyword arguments the processor needs that are not in its saved config.
    processor_kwargs: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {
    "qwen2_vl": Family("qwen2_vl", ("qwen2_vl",), Qwen2VLImageProcessor, "Qwen2VLProcessor", True),
    "qwen2_5_vl": Family("qwen2_5_vl", ("qwen2_5_vl",), Qwen2_5VLImageProcessor, "Qwen2_5_VLProcessor", True),
    "llava": Family(
        "llava",
        ("llava",),
        LlavaProcessor,
        "LlavaProcessor",
        False,
        ("patch_size", "vision_feature_select_strategy", "num_additional_image_tokens", "image_token"),
    ),
}


def family_of(model_type: str) -> Family:
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise UnsupportedModelError(f"model type {model_type!r} is not supported; supported: {sorted(FAMILIES)}")

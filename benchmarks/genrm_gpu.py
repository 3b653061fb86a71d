"""GenRM scoring and training at Qwen2-VL-2B shapes (random weights), for a GPU machine.

    python benchmarks/genrm_gpu.py [--shape 2b|tiny] [--device cuda] [--dtype bfloat16] [--pairs 256] [--batch-size 32] [--vllm]

Builds a Qwen2-VL checkpoint of the 2B model's shapes (28 decoder layers, hidden 1536, a
32-block vision tower of width 1280; about 2.2 B parameters) with random weights — the tiny
model's tokenizer and processor, images of 448 x 448 px (256 image tokens) and a prompt padded
to about 514 tokens in all — saves it as a Hugging Face checkpoint and loads it back through
``GenRM.load``, the path a real checkpoint takes. Then, in one run on the same pairs:

* scoring, pairwise P([[A]]) over both orders: the reference path (four full sequences per
  pair) and the default path (each prompt's shared prefix once, its KV cache for both options'
  tails), as pairs/s and *scored sequences/s equivalent* (4 x pairs/s: the reference's
  sequences), with max |dp| between them; with ``--vllm`` also the vLLM backend
  (``genrm.backend: vllm``) on the same checkpoint, and its max |dp| against transformers;
* one SFT step on 16 sequences of the same shape (bf16 autocast when --dtype bfloat16):
  tokens/s and MFU = 6 x parameters x tokens/s over the GPU's peak (--peak-tflops, 989 for an
  H100/H200's dense bf16).

``--shape tiny`` runs the same code on the tiny model (CPU is fine): a check of the script, not
a measurement. The anchor to beat (issue 19): plain transformers at these shapes on an H200,
102 sequences/s at batch 64 and 16.7 k training tokens/s.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vlgenrm.genrm.config import Backend, GenRMSettings
from vlgenrm.genrm.model import GenRM, PairwiseQuery
from vlgenrm.genrm.prompts import target_text
from vlgenrm.genrm.tiny import build_tiny_genrm
from vlgenrm.genrm.training import SFTCollator, SFTExample, make_batch, train_step
from vlgenrm.genrm.verdicts import Mode

#: Qwen2-VL-2B-Instruct's shapes (its config.json).
SHAPES_2B = {
    "text": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "max_position_embeddings": 32768,
    },
    "vision": {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4, "hidden_size": 1536},
}


def png(rng: random.Random, side: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(buf, "PNG")
    return buf.getvalue()


def build(directory: Path, shape: str, device: str, dtype: torch.dtype) -> Path:
    """The checkpoint folder: the tiny model's tokenizer and processor, weights of ``shape``."""
    side = 448 if shape == "2b" else 56
    build_tiny_genrm(directory, image_size=side)
    if shape == "tiny":
        return directory
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(directory)
    for key, value in SHAPES_2B["text"].items():
        setattr(config.text_config, key, value)
    for key, value in SHAPES_2B["vision"].items():
        setattr(config.vision_config, key, value)
    # The tiny tower's wide init (docs/genrm.md) would overflow 32 blocks in bf16: the usual one.
    config.vision_config.initializer_range = config.text_config.initializer_range = 0.02
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    for path in directory.glob("*.safetensors"):
        path.unlink()
    model.save_pretrained(directory)
    del model
    return directory


def queries(rng: random.Random, n: int, side: int, words: int) -> list[PairwiseQuery]:
    question = "Look at the picture carefully and say which shapes you see, their colours and what the sign says. " * words
    return [
        PairwiseQuery(
            png(rng, side), question.strip(), "A red square sits on the left next to a blue circle.", "A blue square sits on the left next to a red circle."
        )
        for _ in range(n)
    ]


def rate(genrm: GenRM, qs: list[PairwiseQuery], repeats: int) -> tuple[float, list[float]]:
    genrm.pairwise_probs(qs[:2])  # warm-up: allocator, kernels
    best, probs = float("inf"), []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        probs = genrm.pairwise_probs(qs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(qs) / best, probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["2b", "tiny"], default="2b", help="model shapes (tiny: a check of the script)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--pairs", type=int, default=256, help="pairs scored per path")
    parser.add_argument("--batch-size", type=int, default=32, help="GenRMSettings.batch_size (prompts per forward)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path (the best counts)")
    parser.add_argument("--steps", type=int, default=10, help="train steps timed")
    parser.add_argument("--vllm", action="store_true", help="also the vLLM backend (needs vllm)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense peak for --dtype (H100/H200 bf16: 989)")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    rng = random.Random(0)
    out: dict[str, object] = {"shape": args.shape, "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        path = build(Path(tmp) / "genrm", args.shape, args.device, dtype)
        out["build_s"] = round(time.perf_counter() - started, 1)
        settings = GenRMSettings(device=args.device, dtype=args.dtype, batch_size=args.batch_size, max_length=8192)
        genrm = GenRM.load(path, settings)
        side = 448 if args.shape == "2b" else 56
        qs = queries(rng, args.pairs, side, words=9 if args.shape == "2b" else 1)
        sample = genrm.encode_prompt(qs[0].image, genrm.prompt(Mode.PAIRWISE, qs[0].question, (qs[0].response_a, qs[0].response_b)))
        image_tokens = int((sample["input_ids"][0] == genrm.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
        out["prompt_tokens"], out["image_tokens"] = int(sample["input_ids"].shape[1]), image_tokens
        out["parameters_b"] = round(sum(p.numel() for p in genrm.model.parameters()) / 1e9, 3)

        results = {}
        for prefix_cache in (False, True):
            genrm.settings = settings.model_copy(update={"prefix_cache": prefix_cache})
            results[prefix_cache] = rate(genrm, qs, args.repeats)
        (ref_rate, ref_p), (new_rate, new_p) = results[False], results[True]
        out["reference_pairs_s"], out["prefix_cache_pairs_s"] = round(ref_rate, 2), round(new_rate, 2)
        out["reference_seq_s"], out["prefix_cache_seq_s_equivalent"] = round(4 * ref_rate, 1), round(4 * new_rate, 1)
        out["max_dp_paths"] = max(abs(a - b) for a, b in zip(ref_p, new_p, strict=True))

        collator = SFTCollator(genrm)
        examples = [SFTExample(q.image, q.question, (q.response_a, q.response_b), target_text("", "A", q.response_a)) for q in qs[:64]]
        optimizer = torch.optim.AdamW(genrm.model.parameters(), lr=1e-5)
        times, tokens = [], 0
        for _ in range(args.steps + 2):
            batch = make_batch(collator, [rng.choice(examples) for _ in range(16)])
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
                train_step(genrm.model, optimizer, [batch])
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            tokens = int(batch.sft["attention_mask"].sum())
        step = statistics.median(times[2:])
        out["train_step_s"], out["train_tokens_s"] = round(step, 3), round(tokens / step)
        out["train_mfu"] = round(6 * out["parameters_b"] * 1e9 * tokens / step / (args.peak_tflops * 1e12), 3)

        if args.vllm:
            del genrm, optimizer
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            served = GenRM.load(path, settings.model_copy(update={"backend": Backend.VLLM, "vllm_args": {"gpu_memory_utilization": 0.6}}))
            vllm_rate, vllm_p = rate(served, qs, args.repeats)
            out["vllm_pairs_s"], out["vllm_seq_s_equivalent"] = round(vllm_rate, 2), round(4 * vllm_rate, 1)
            out["max_dp_vllm_vs_transformers"] = max(abs(a - b) for a, b in zip(new_p, vllm_p, strict=True))

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.machine()} CPU"
    print(f"machine: {name}, torch {torch.__version__}")
    print(json.dumps(out, indent=1))
    print(f"ratio: {out['prefix_cache_pairs_s'] / out['reference_pairs_s']:.2f}")


if __name__ == "__main__":
    main()

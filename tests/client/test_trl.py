"""TRL's real GRPOTrainer for a few steps on a tiny policy (built from a config, CPU), with
vlgenrm's reward function calling the live scorer: the rewards TRL logged are the scorer's for
the same completions, and a scorer error stops training with that error, not a 0 reward."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.client.conftest import B64, IMAGE, KEY, QUESTION, LiveScorer, png
from vlgenrm.client import InvalidImageError
from vlgenrm.client.trl import AsyncVLGenRMReward, VLGenRMReward, completion_text, prompt_question

pytestmark = pytest.mark.slow
trl = pytest.importorskip("trl")
G = 4  # completions per prompt


class Recorded(VLGenRMReward):
    """The reward function as given to TRL, keeping what it was called with and returned."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[list, list, list, list[float]]] = []

    def __call__(self, prompts, completions, **kwargs):
        rewards = super().__call__(prompts, completions, **kwargs)
        self.calls.append((list(prompts), list(completions), list(kwargs["image_uri"]), list(rewards)))
        return rewards


@pytest.fixture(scope="module")
def policy():
    """A tiny Qwen2 causal LM (random weights) and the tiny GenRM family's tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from vlgenrm.genrm.families import FAMILIES
    from vlgenrm.genrm.tiny import train_tokenizer

    tokenizer = train_tokenizer(FAMILIES["qwen2_vl"], vocab_size=512)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return Qwen2ForCausalLM(config), tokenizer


def grpo(policy, reward, dataset, out: Path, steps: int = 2):
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = policy
    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=G,
        num_generations=G,
        max_completion_length=6,
        max_steps=steps,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        seed=0,
        beta=0.0,
        learning_rate=1e-3,
        temperature=1.0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        bf16=False,
        fp16=False,
    )
    return GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset, processing_class=tokenizer)


def dataset(images: list[str], questions: list[str]):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n" for q in questions], "image_uri": images})


def test_grpo_trains_on_scorer_rewards_that_equal_direct_scorer_calls(live: LiveScorer, policy, tmp_path):
    red = live.store.uri(live.store.put_image(IMAGE, "png").key)
    blue = live.store.uri(live.store.put_image(png((20, 20, 220)), "png").key)
    reward = Recorded(live.url, KEY, image_column="image_uri")
    trainer = grpo(policy, reward, dataset([red, blue, red, blue], [QUESTION, "What shape is it?", "Is there text?", QUESTION]), tmp_path)
    trainer.train()

    assert len(reward.calls) == 2  # one generation batch (1 prompt x G completions) per step
    logged = [entry["rewards/vlgenrm/mean"] for entry in trainer.state.log_history if "rewards/vlgenrm/mean" in entry]
    assert len(logged) == 2
    for (prompts, completions, images, rewards), mean in zip(reward.calls, logged, strict=True):
        assert len(completions) == G and len(set(images)) == 1
        question = prompt_question(prompts[0])
        assert question in (QUESTION, "What shape is it?", "Is there text?")
        direct = live.direct_rewards(images[0], question, [completion_text(c) for c in completions])
        assert rewards == pytest.approx(direct, abs=1e-5)
        assert mean == pytest.approx(sum(direct) / G, abs=1e-5)
    # TRL's own completions log (the last generation batch) holds the same rewards.
    last_prompts, last_completions, last_images, _ = reward.calls[-1]
    assert list(trainer._logs["completion"]) == last_completions
    assert list(trainer._logs["rewards"]["vlgenrm"]) == pytest.approx(
        live.direct_rewards(last_images[0], prompt_question(last_prompts[0]), last_completions), abs=1e-5
    )


def test_a_scorer_error_stops_training_with_the_error_not_a_zero_reward(live: LiveScorer, policy, tmp_path):
    bad = "data:image/png;base64," + B64[:40]  # not a decodable image: the scorer answers 400 invalid_image
    trainer = grpo(policy, VLGenRMReward(live.url, KEY, image_column="image_uri"), dataset([bad] * 2, [QUESTION] * 2), tmp_path, steps=1)
    with pytest.raises(InvalidImageError) as caught:
        trainer.train()
    assert caught.value.status == 400 and caught.value.code == "invalid_image"
    assert trainer.state.global_step == 0 and not trainer.state.log_history


def test_conversational_prompts_pil_images_pairwise_references_and_the_async_reward(live: LiveScorer):
    from PIL import Image

    pil = Image.open(__import__("io").BytesIO(IMAGE))
    prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]] * 2
    completions = [[{"role": "assistant", "content": "It is red."}], [{"role": "assistant", "content": "It is blue."}]]
    pointwise = VLGenRMReward(live.url, KEY)
    rewards = pointwise(prompts, completions, image=[pil, pil])
    assert rewards == pytest.approx(live.direct_rewards(B64, QUESTION, ["It is red.", "It is blue."]), abs=1e-5)
    # a one-image `images` column, and the async callable TRL awaits on its loop
    async_reward = AsyncVLGenRMReward(live.url, KEY)
    assert asyncio.run(async_reward(prompts, completions, images=[[IMAGE], [IMAGE]])) == pytest.approx(rewards, abs=1e-6)
    # with a reference column: P(completion better than the reference), from /v1/compare
    preferences = pointwise(prompts, completions, image=[pil, pil], reference=["It is a red square.", "It is a red square."])
    with live.client() as client:
        expected = [client.compare(IMAGE, QUESTION, [c, "It is a red square."]).pairs[0].p_first for c in ("It is red.", "It is blue.")]
    assert preferences == pytest.approx(expected, abs=1e-5)
    with pytest.raises(Exception, match="no image column"):
        pointwise(prompts, completions, picture=[pil, pil])

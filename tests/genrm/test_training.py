"""Training math: masking, both orders, DPO, LoRA, checkpointing, and learning from pixels."""

from __future__ import annotations

import math
import random

import pytest
import torch

from tests.genrm.conftest import load, png
from vlgenrm.contracts import Choice
from vlgenrm.genrm.config import LossAverage
from vlgenrm.genrm.model import GenRM, PairwiseQuery
from vlgenrm.genrm.prompts import target_text
from vlgenrm.genrm.training import (
    IGNORE,
    LoraSettings,
    Objective,
    SFTCollator,
    SFTExample,
    StepSettings,
    apply_lora,
    both_orders,
    dpo_loss,
    enable_gradient_checkpointing,
    make_batch,
    save_adapter,
    sft_loss,
    train_step,
)
from vlgenrm.genrm.verdicts import Mode

QUESTION = "What colour is the square?"
RESPONSES = ("It is red.", "It is blue.")


def colour_set(n: int, seed: int = 0, red_is: Choice = Choice.A) -> list[tuple[bytes, Choice]]:
    """Same text every time; only the pixels say whether the red square's option (``red_is``)
    or the blue square's (the other) is right."""
    rng = random.Random(seed)
    blue_is = Choice.B if red_is is Choice.A else Choice.A
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append((png((rng.randint(180, 255), rng.randint(0, 60), rng.randint(0, 60))), red_is))
        else:
            out.append((png((rng.randint(0, 60), rng.randint(0, 60), rng.randint(180, 255))), blue_is))
    return out


def examples(data, critique: str = "") -> list[SFTExample]:
    return [SFTExample(image, QUESTION, RESPONSES, target_text(critique, y.value)) for image, y in data]


def test_collator_puts_loss_on_target_tokens_only(qwen: GenRM):
    exs = examples(colour_set(2), critique="Response A names the colour.")
    collator = SFTCollator(qwen)
    batch = collator(exs)
    for i, ex in enumerate(exs):
        prompt_len = qwen.encode_prompt(ex.image, qwen.prompt(Mode.PAIRWISE, QUESTION, RESPONSES))["input_ids"].shape[1]
        labels = batch["labels"][i].tolist()
        # The model restates the response it picks (settings.restate), so that is what gets the loss.
        answer = collator.answer(ex, ex.target)
        assert answer == target_text("Response A names the colour.", ex.target[-3], RESPONSES["AB".index(ex.target[-3])])
        target = qwen.token_ids(answer) + [qwen.tokenizer.eos_token_id]
        assert labels[:prompt_len] == [IGNORE] * prompt_len
        assert labels[prompt_len : prompt_len + len(target)] == target
        assert all(x == IGNORE for x in labels[prompt_len + len(target) :])
        assert batch["attention_mask"][i].sum().item() == prompt_len + len(target)
    assert batch["labels"].shape == batch["input_ids"].shape


def test_sequence_average_weighs_a_bare_verdict_like_a_critique(qwen: GenRM):
    """Per-sequence averaging is the mean of each row's own token mean (which transformers'
    per-token loss gives for a row alone); with a long critique and a bare verdict in one batch
    the two averages differ."""
    image = colour_set(1)[0][0]
    long = SFTExample(
        image,
        QUESTION,
        RESPONSES,
        target_text("Response A names the colour of the square, and response B names another colour that the image does not show at all.", "A"),
    )
    bare = SFTExample(image, QUESTION, RESPONSES, target_text("", "A"))
    collator = SFTCollator(qwen)
    with torch.no_grad():
        rows = [sft_loss(qwen.model, collator([ex]), LossAverage.TOKEN).item() for ex in (long, bare)]
        per_sequence = sft_loss(qwen.model, collator([long, bare]), LossAverage.SEQUENCE).item()
        per_token = sft_loss(qwen.model, collator([long, bare]), LossAverage.TOKEN).item()
    assert per_sequence == pytest.approx(sum(rows) / 2, rel=1e-4)
    assert abs(per_token - per_sequence) > 1e-3


def test_both_orders_swap_responses_and_verdicts():
    ex = SFTExample(b"img", QUESTION, RESPONSES, "Response A is right.\nVerdict: [[A]]", rejected="Response B is right.\nVerdict: [[B]]")
    shown = both_orders([ex])
    assert shown[0] == ex
    assert shown[1].responses == RESPONSES[::-1]
    assert shown[1].target == "Response B is right.\nVerdict: [[B]]"
    assert shown[1].rejected == "Response A is right.\nVerdict: [[A]]"


def test_dpo_loss_and_gradients_match_hand_computation():
    pc = torch.tensor([-1.0], requires_grad=True)
    pr = torch.tensor([-2.0], requires_grad=True)
    ref = torch.tensor([-1.5])
    loss, chosen, rejected = dpo_loss(pc, pr, ref, ref, beta=0.5)
    # logits = 0.5 * ((-1 + 1.5) - (-2 + 1.5)) = 0.5; loss = -log sigmoid(0.5)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))))
    assert (chosen.item(), rejected.item()) == pytest.approx((0.25, -0.25))
    loss.backward()
    # d/dpc = -beta * sigmoid(-logits); d/dpr = +beta * sigmoid(-logits)
    expected = 0.5 / (1 + math.exp(0.5))
    assert pc.grad.item() == pytest.approx(-expected) and pr.grad.item() == pytest.approx(expected)
    # Policy equal to the reference: loss is log 2 whatever beta.
    equal, _, _ = dpo_loss(ref, ref - 1, ref, ref - 1, beta=3.0)
    assert equal.item() == pytest.approx(math.log(2))


def test_verdict_loss_is_the_cross_entropy_of_the_scored_verdict(tiny_dirs):
    """The verdict loss trains exactly what direct scoring reports: per bare verdict row,
    -log sigmoid of the margin :meth:`GenRM.margins` computes for the labelled option, summed
    and divided by the micro-batch's rows (critique rows add nothing), equal through length
    buckets' separate passes; and it raises that margin."""
    genrm = load(tiny_dirs["qwen2_vl"])
    data = colour_set(4)
    critiques, bare = both_orders(examples(data, critique="Response A names the colour.")), both_orders(examples(data))
    exs = [*critiques, *bare]
    queries = [PairwiseQuery(ex.image, ex.question, *ex.responses) for ex in bare]
    labels = [Choice(ex.target[-3]) for ex in bare]
    with torch.no_grad():
        margins = torch.tensor(genrm.margins(queries, labels))
    expected = -torch.nn.functional.logsigmoid(margins).sum().item() / len(exs)
    collator = SFTCollator(genrm)
    optimizer = torch.optim.SGD(genrm.model.parameters(), lr=0.0)
    settings = StepSettings(loss_average=LossAverage.SEQUENCE, verdict_weight=2.0)
    one = train_step(genrm.model, optimizer, [make_batch(collator, exs, alternatives=True)], settings)
    assert one["verdict_loss"] == pytest.approx(expected, abs=1e-4)
    assert one["verdict_accuracy"] == pytest.approx(float((margins > 0).float().mean()))
    assert one["loss"] == pytest.approx(one["sft_loss"] + 2.0 * one["verdict_loss"], abs=1e-4)
    with torch.no_grad():
        assert one["sft_loss"] == pytest.approx(sft_loss(genrm.model, collator(exs), LossAverage.SEQUENCE).item(), abs=1e-4)
    # Length buckets: critiques in one pass, bare verdicts in the other, each weighted by its
    # share of the rows (StepData._bucketed): the unsplit batch's numbers.
    halves = [make_batch(collator, critiques, alternatives=True), make_batch(collator, bare, alternatives=True)]
    assert halves[0].alternative is None and halves[0].alternative_rows.numel() == 0
    for half in halves:
        half.weight = 2 * len(critiques) / len(exs)
    split = train_step(genrm.model, optimizer, halves, settings)
    assert split["verdict_loss"] == pytest.approx(expected, abs=1e-4)
    assert split["sft_loss"] == pytest.approx(one["sft_loss"], abs=1e-4)
    with pytest.raises(ValueError, match="alternatives"):
        train_step(genrm.model, optimizer, [make_batch(collator, exs)], settings)
    learner = torch.optim.AdamW(genrm.model.parameters(), lr=1e-3)
    for _ in range(5):
        train_step(genrm.model, learner, [make_batch(collator, exs, alternatives=True)], StepSettings(verdict_weight=2.0))
    with torch.no_grad():
        assert torch.tensor(genrm.margins(queries, labels)).mean() > margins.mean()


def test_alternatives_are_the_bare_verdicts_other_option(qwen: GenRM):
    image = colour_set(1)[0][0]
    collator = SFTCollator(qwen)
    critique = SFTExample(image, QUESTION, RESPONSES, target_text("Response A names the colour.", "A"))
    bare = SFTExample(image, QUESTION, RESPONSES, target_text("", "A"))
    free = SFTExample(image, QUESTION, RESPONSES, "No verdict here.")
    batch, rows = collator.alternatives([critique, bare, free])
    assert rows.tolist() == [1]
    prompt_len = qwen.encode_prompt(image, qwen.prompt(Mode.PAIRWISE, QUESTION, RESPONSES))["input_ids"].shape[1]
    other = qwen.token_ids(qwen.continuation(Mode.PAIRWISE, "", "B", RESPONSES))
    assert batch["labels"][0].tolist()[prompt_len:] == other
    assert batch["attention_mask"][0].sum().item() == prompt_len + len(other)  # no EOS: scored as the GenRM scores
    assert collator.alternatives([critique, free])[0] is None


def test_sft_plus_dpo_step_starts_at_log2_against_itself(tiny_dirs):
    policy, reference = load(tiny_dirs["qwen2_vl"]), load(tiny_dirs["qwen2_vl"])
    exs = [
        SFTExample(
            image,
            QUESTION,
            RESPONSES,
            target_text("Response A is right.", y.value),
            rejected=target_text("Response B is right.", ("B" if y is Choice.A else "A")),
        )
        for image, y in colour_set(4)
    ]
    batch = make_batch(SFTCollator(policy), exs, reference=reference.model)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=1e-3)
    metrics = train_step(policy.model, optimizer, [batch], StepSettings(objective=Objective.SFT_DPO))
    assert metrics["dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert metrics["loss"] == pytest.approx(metrics["sft_loss"] + metrics["dpo_loss"], abs=1e-4)
    second = train_step(policy.model, optimizer, [batch], StepSettings(objective=Objective.SFT_DPO))
    assert second["dpo_loss"] < metrics["dpo_loss"] and second["reward_margin"] > 0
    with pytest.raises(ValueError, match="rejected"):
        train_step(policy.model, optimizer, [make_batch(SFTCollator(policy), exs)], StepSettings(objective=Objective.SFT_DPO))


def test_lora_adapters_train_save_and_load(tiny_dirs, tmp_path):
    genrm = apply_lora(load(tiny_dirs["qwen2_vl"]), LoraSettings(r=4, alpha=8))
    frozen = {n: p.clone() for n, p in genrm.model.named_parameters() if "lora_" not in n}
    trainable = [n for n, p in genrm.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    optimizer = torch.optim.AdamW([p for p in genrm.model.parameters() if p.requires_grad], lr=1e-2)
    collator = SFTCollator(genrm)
    for _ in range(3):
        train_step(genrm.model, optimizer, [make_batch(collator, examples(colour_set(4)))])
    assert all(torch.equal(p, frozen[n]) for n, p in genrm.model.named_parameters() if n in frozen)
    save_adapter(genrm, tmp_path / "adapter")
    reloaded = load(tiny_dirs["qwen2_vl"], adapter=tmp_path / "adapter")
    query = [PairwiseQuery(png((200, 0, 0)), QUESTION, *RESPONSES)]
    assert reloaded.pairwise_probs(query) == pytest.approx(genrm.pairwise_probs(query), abs=1e-6)
    assert genrm.pairwise_probs(query) != pytest.approx(load(tiny_dirs["qwen2_vl"]).pairwise_probs(query), abs=1e-6)
    merged = genrm.save(tmp_path / "merged")  # HF format with the adapter merged in
    assert load(merged).pairwise_probs(query) == pytest.approx(genrm.pairwise_probs(query), abs=1e-5)


def test_gradient_checkpointing_gives_the_same_loss(tiny_dirs):
    plain, checkpointed = load(tiny_dirs["qwen2_vl"]), load(tiny_dirs["qwen2_vl"])
    enable_gradient_checkpointing(checkpointed)
    batch = make_batch(SFTCollator(plain), examples(colour_set(4)))
    a = train_step(plain.model, torch.optim.SGD(plain.model.parameters(), lr=0.0), [batch])
    b = train_step(checkpointed.model, torch.optim.SGD(checkpointed.model.parameters(), lr=0.0), [batch])
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)


@pytest.fixture(scope="module")
def colour_trained(tiny_dirs) -> tuple[GenRM, list[tuple[bytes, Choice]], list[float]]:
    """The tiny model trained to answer from pixels: the text is identical in every example
    and shown in one order, so only the image can tell red from blue. 60 steps.

    A random model's verdict already depends on the colour (its vision features keep the
    colours apart), with a sign set by chance; it is taught the mapping it gets wrong, so the
    accuracy it reaches is learnt."""
    torch.manual_seed(0)
    rng = random.Random(0)
    genrm = load(tiny_dirs["qwen2_vl"])
    probe = colour_set(16)
    untrained = genrm.margins([PairwiseQuery(image, QUESTION, *RESPONSES) for image, _ in probe], [Choice.A] * len(probe))
    data = colour_set(16, red_is=Choice.B if accuracy(untrained, probe) > 0.5 else Choice.A)
    queries = [PairwiseQuery(image, QUESTION, *RESPONSES) for image, _ in data]
    before = genrm.margins(queries, [Choice.A] * len(data))
    collator, pool = SFTCollator(genrm), examples(data)
    optimizer = torch.optim.AdamW(genrm.model.parameters(), lr=1e-3)
    for _ in range(60):
        train_step(genrm.model, optimizer, [make_batch(collator, rng.sample(pool, 8))])
    return genrm, data, before


def accuracy(margins_for_a: list[float], data) -> float:
    """A verdict is right when the margin towards A is positive exactly for the red squares."""
    return sum((m > 0) == (y is Choice.A) for m, (_, y) in zip(margins_for_a, data, strict=True)) / len(data)


@pytest.mark.slow
def test_tiny_model_learns_an_image_conditioned_verdict(colour_trained):
    genrm, data, before = colour_trained
    after = genrm.margins([PairwiseQuery(image, QUESTION, *RESPONSES) for image, _ in data], [Choice.A] * len(data))
    print(f"\ntrain accuracy before {accuracy(before, data):.2f}, after {accuracy(after, data):.2f}")
    assert accuracy(before, data) <= 0.75, "the untrained model should not already know"
    assert accuracy(after, data) >= 0.95


@pytest.mark.slow
def test_margin_sign_follows_the_learned_preference(colour_trained):
    genrm, data, _ = colour_trained
    queries = [PairwiseQuery(image, QUESTION, *RESPONSES) for image, _ in data]
    right = genrm.margins(queries, [y for _, y in data])
    wrong = genrm.margins(queries, [Choice.B if y is Choice.A else Choice.A for _, y in data])
    assert sum(m > 0 for m in right) >= 0.95 * len(data)
    assert right == pytest.approx([-m for m in wrong])
    unseen = colour_set(8, seed=99, red_is=data[0][1])  # new shades (the trained mapping: data[0] is red): the rule generalises
    fresh = genrm.margins([PairwiseQuery(image, QUESTION, *RESPONSES) for image, _ in unseen], [y for _, y in unseen])
    assert sum(m > 0 for m in fresh) >= 7


def test_a_restating_model_learns_from_the_image_in_both_orders(tiny_dirs):
    """Shown in both orders, the bare verdict is an equality of text and image (which colour is
    named where); the restated answer is a caption of the image, which a tiny model learns at
    once. 30 steps, scored on unseen shades in both orders."""
    torch.manual_seed(0)
    rng = random.Random(0)
    genrm = load(tiny_dirs["qwen2_vl"], settings={"restate": True})
    pool = both_orders(examples(colour_set(32)))
    collator, optimizer = SFTCollator(genrm), torch.optim.AdamW(genrm.model.parameters(), lr=1e-3)
    for _ in range(30):
        train_step(genrm.model, optimizer, [make_batch(collator, rng.sample(pool, 8))])
    unseen = colour_set(16, seed=7)
    shown = genrm.pairwise_probs([PairwiseQuery(image, QUESTION, *RESPONSES) for image, _ in unseen])
    swapped = genrm.pairwise_probs([PairwiseQuery(image, QUESTION, *RESPONSES[::-1]) for image, _ in unseen])
    right = sum((p > 0.5) == (y is Choice.A) for p, (_, y) in zip(shown, unseen, strict=True)) + sum(
        (p > 0.5) == (y is Choice.B) for p, (_, y) in zip(swapped, unseen, strict=True)
    )
    assert right / 32 >= 0.95

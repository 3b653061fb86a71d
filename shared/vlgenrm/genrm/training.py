"""Training math of §3.5: the SFT collator (loss on target tokens only), both-order
augmentation, the verdict loss (the reported verdict probability's cross-entropy), the DPO loss
against reference log-probs, LoRA, and the ``train_step`` the Ray Train worker calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from vlgenrm.genrm.config import LoraSettings, LossAverage, Objective
from vlgenrm.genrm.errors import ContextTooLongError
from vlgenrm.genrm.model import IGNORE, GenRM, ImageInput, join_and_pad, to_model
from vlgenrm.genrm.verdicts import OPTIONS, Mode, parse_verdict, strip_verdict, swap_ab


@dataclass(frozen=True)
class SFTExample:
    """One training example: prompt inputs, the target critique+verdict, optionally a rejected one."""

    image: ImageInput
    question: str
    responses: tuple[str, ...]
    target: str
    rejected: str | None = None
    mode: Mode = Mode.PAIRWISE
    evidence: str | None = None

    def swapped(self) -> SFTExample:
        """The same pair shown in the other order, with A and B renamed in the critiques."""
        if self.mode is not Mode.PAIRWISE:
            return self
        return replace(
            self,
            responses=self.responses[::-1],
            target=swap_ab(self.target),
            rejected=swap_ab(self.rejected) if self.rejected else None,
        )


def both_orders(examples: Sequence[SFTExample]) -> list[SFTExample]:
    """Each pairwise example in both A/B orders, so position is never a cue (§3.5)."""
    return [shown for ex in examples for shown in ((ex, ex.swapped()) if ex.mode is Mode.PAIRWISE else (ex,))]


class SFTCollator:
    """Turns examples into a right-padded batch whose labels cover the target tokens only."""

    def __init__(self, genrm: GenRM) -> None:
        self.genrm = genrm

    def answer(self, ex: SFTExample, target: str) -> str:
        """The target as the model is scored on it (:meth:`GenRM.continuation`): a critique ending
        in one verdict, with the picked response restated in the shown order when the model
        restates. Added here, after any A/B renaming, so the response's text is never renamed.
        A target without a single verdict is trained as written."""
        parsed = parse_verdict(target, ex.mode)
        if not parsed.ok:
            return target
        return self.genrm.continuation(ex.mode, strip_verdict(target), parsed.option, ex.responses)

    def prompt_features(self, ex: SFTExample) -> dict[str, torch.Tensor]:
        """The encoded prompt (image and text) an example's targets follow."""
        return self.genrm.encode_prompt(ex.image, self.genrm.prompt(ex.mode, ex.question, ex.responses, ex.evidence))

    def __call__(
        self, examples: Sequence[SFTExample], *, use_rejected: bool = False, features: Sequence[dict[str, torch.Tensor]] | None = None
    ) -> dict[str, torch.Tensor]:
        """``features``: the examples' :meth:`prompt_features`, when already computed."""
        prompts, targets = [], []
        for i, ex in enumerate(examples):
            target = ex.rejected if use_rejected else ex.target
            if target is None:
                raise ValueError("use_rejected needs every example to carry a rejected critique")
            features_i = features[i] if features is not None else self.prompt_features(ex)
            target_ids = self.genrm.token_ids(self.answer(ex, target)) + [self.genrm.tokenizer.eos_token_id]
            length = features_i["input_ids"].shape[1] + len(target_ids)
            if length > self.genrm.settings.max_length:
                raise ContextTooLongError(f"example of {length} tokens exceeds max_length={self.genrm.settings.max_length}")
            prompts.append(features_i)
            targets.append(target_ids)
        return join_and_pad(prompts, targets, self.genrm.pad_id, left=False, labels=True)

    def alternatives(
        self,
        examples: Sequence[SFTExample],
        features: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor]:
        """The verdict loss's other options: for each *bare verdict* example (no critique: the
        line direct scoring reads, §3.7), its answer with the other option (the other response
        restated), without EOS, as scored (:meth:`GenRM.option_logprobs`); and those examples'
        row indices. ``None`` when the examples hold no bare verdict."""
        prompts, targets, rows = [], [], []
        for i, ex in enumerate(examples):
            parsed = parse_verdict(ex.target, ex.mode)
            if not parsed.ok or strip_verdict(ex.target).strip():
                continue
            options = OPTIONS[ex.mode]
            other = options[1 - options.index(parsed.option)]
            prompts.append(features[i] if features is not None else self.prompt_features(ex))
            targets.append(self.genrm.token_ids(self.genrm.continuation(ex.mode, "", other, ex.responses)))
            rows.append(i)
        batch = join_and_pad(prompts, targets, self.genrm.pad_id, left=False, labels=True) if rows else None
        return batch, torch.tensor(rows, dtype=torch.long)


def target_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """log p of every target token (rows x positions, 0 where not a target) and the target mask."""
    batch = to_model(batch, model)
    labels = batch.pop("labels")
    logits = model(**batch).logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE
    picked = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def sequence_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of log p(target tokens) per sequence (what DPO compares)."""
    return target_logprobs(model, batch)[0].sum(-1)


def sft_loss(model: Any, batch: dict[str, torch.Tensor], average: LossAverage = LossAverage.TOKEN) -> torch.Tensor:
    """Cross-entropy over target tokens, averaged per token (transformers' loss: it shifts the
    labels and skips IGNORE) or per sequence (each row's mean, then the mean of the rows)."""
    if average is LossAverage.TOKEN:
        return model(**to_model(batch, model)).loss
    return _sft_from_tokens(*target_logprobs(model, batch), average)


def _sft_from_tokens(picked: torch.Tensor, mask: torch.Tensor, average: LossAverage) -> torch.Tensor:
    """:func:`sft_loss` from already computed target log-probs."""
    if average is LossAverage.TOKEN:
        return -picked.sum() / mask.sum().clamp(min=1)
    counted = mask.sum(-1)
    rows = counted > 0
    return -(picked.sum(-1)[rows] / counted[rows]).mean()


def verdict_loss(chosen: torch.Tensor, rejected: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-log P(the labelled option), P over the two options as the GenRM reports it
    (:func:`~vlgenrm.genrm.model.first_option_probability`), summed over the bare verdict rows
    and divided by the micro-batch's ``rows`` (a row without one adds 0), so length buckets'
    row-share weights give the unsplit batch's value; also the share of those rows the label wins."""
    margin = chosen - rejected
    if margin.numel() == 0:
        return chosen.sum() * 0.0, torch.tensor(0.0)
    return -F.logsigmoid(margin).sum() / rows, (margin > 0).float().mean().detach()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))); also the implicit rewards."""
    chosen_reward = beta * (policy_chosen - reference_chosen)
    rejected_reward = beta * (policy_rejected - reference_rejected)
    loss = -F.logsigmoid(chosen_reward - rejected_reward).mean()
    return loss, chosen_reward.detach(), rejected_reward.detach()


class StepSettings(BaseModel):
    """What one optimisation step does."""

    objective: Objective = Field(Objective.SFT, description="sft, or sft+dpo (needs rejected critiques and reference log-probs).")
    loss_average: LossAverage = Field(LossAverage.TOKEN, description="SFT loss averaged per target token or per sequence.")
    dpo_beta: float = Field(0.1, gt=0, description="DPO temperature beta.")
    dpo_weight: float = Field(1.0, ge=0, description="Weight of the DPO term added to the SFT loss.")
    verdict_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of the verdict loss (the reported verdict probability's cross-entropy) added to the SFT loss; needs alternatives in every micro-batch.",
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")


@dataclass
class TrainBatch:
    """A micro-batch: SFT inputs, for the verdict loss each row's other option, and for DPO
    the chosen/rejected inputs with reference log-probs."""

    sft: dict[str, torch.Tensor]
    chosen: dict[str, torch.Tensor] | None = None
    rejected: dict[str, torch.Tensor] | None = None
    reference_chosen: torch.Tensor | None = None
    reference_rejected: torch.Tensor | None = None
    #: The bare verdict rows' answers with the other option, no EOS (:meth:`SFTCollator.alternatives`).
    alternative: dict[str, torch.Tensor] | None = None
    #: The SFT rows those are (indices); set, possibly empty, when alternatives were made.
    alternative_rows: torch.Tensor | None = None
    #: 0 keeps a micro-batch in the step (so data-parallel workers stay in lockstep) while
    #: contributing no gradient: what a worker runs when all its examples were unusable.
    weight: float = 1.0


def make_batch(collator: SFTCollator, examples: Sequence[SFTExample], reference: Any = None, *, alternatives: bool = False) -> TrainBatch:
    """Collate examples; with ``alternatives``, add the verdict loss's other options; with a
    reference model and rejected critiques, add the DPO inputs."""
    # Each example's image and prompt are encoded once for all the batches built from it.
    features = [collator.prompt_features(ex) for ex in examples]
    batch = TrainBatch(collator(examples, features=features))
    if alternatives:
        batch.alternative, batch.alternative_rows = collator.alternatives(examples, features)
    if reference is not None and all(ex.rejected for ex in examples):
        batch.chosen, batch.rejected = batch.sft, collator(examples, use_rejected=True, features=features)
        with torch.no_grad():
            batch.reference_chosen = sequence_logprobs(reference, batch.chosen)
            batch.reference_rejected = sequence_logprobs(reference, batch.rejected)
    return batch


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[TrainBatch],
    settings: StepSettings | None = None,
    *,
    no_sync: Callable[[], AbstractContextManager[Any]] | None = None,
) -> dict[str, float]:
    """One optimiser step over ``micro_batches`` (gradient accumulation), returning metrics.

    ``no_sync`` (DDP's ``model.no_sync``) skips the gradient all-reduce on every micro-batch
    but the last: one all-reduce per step instead of one per micro-batch.
    """
    settings = settings or StepSettings()
    model.train()
    totals = {"loss": 0.0, "sft_loss": 0.0, "dpo_loss": 0.0, "reward_margin": 0.0}
    if settings.verdict_weight:
        totals |= {"verdict_loss": 0.0, "verdict_accuracy": 0.0}
    n = len(micro_batches)
    counted = sum(1 for mb in micro_batches if mb.weight) or 1
    for i, mb in enumerate(micro_batches):
        with no_sync() if no_sync is not None and i < n - 1 else nullcontext():
            _accumulate(model, mb, settings, n, counted, totals)
    grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], settings.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return totals | {"grad_norm": float(grad_norm)}


def _accumulate(model: Any, mb: TrainBatch, settings: StepSettings, n: int, counted: int, totals: dict[str, float]) -> None:
    """Forward and backward of one micro-batch; metrics average over the weighted ones."""
    share = mb.weight / counted
    if settings.verdict_weight:
        if mb.alternative_rows is None:
            raise ValueError("verdict_weight > 0 needs alternatives in every micro-batch (make_batch(..., alternatives=True))")
        picked, mask = target_logprobs(model, mb.sft)
        loss = _sft_from_tokens(picked, mask, settings.loss_average)
        rows = mb.alternative_rows.to(picked.device)
        # Scoring compares the options' continuations without the EOS that SFT targets end in.
        last = mask.shape[1] - 1 - mask.flip(-1).int().argmax(-1)
        chosen = (picked.sum(-1) - picked.gather(-1, last.unsqueeze(-1)).squeeze(-1))[rows]
        rejected = sequence_logprobs(model, mb.alternative) if mb.alternative is not None else chosen.detach()
        term, won = verdict_loss(chosen, rejected, picked.shape[0])
        totals["sft_loss"] += loss.item() * share
        totals["verdict_loss"] += term.item() * share
        totals["verdict_accuracy"] += won.item() * share
        loss = loss + settings.verdict_weight * term
    else:
        loss = sft_loss(model, mb.sft, settings.loss_average)
        totals["sft_loss"] += loss.item() * share
    if settings.objective is Objective.SFT_DPO:
        if mb.chosen is None or mb.rejected is None or mb.reference_chosen is None or mb.reference_rejected is None:
            raise ValueError("objective sft+dpo needs rejected critiques and reference log-probs in every micro-batch")
        term, chosen_r, rejected_r = dpo_loss(
            sequence_logprobs(model, mb.chosen),
            sequence_logprobs(model, mb.rejected),
            mb.reference_chosen.to(loss.device),
            mb.reference_rejected.to(loss.device),
            settings.dpo_beta,
        )
        loss = loss + settings.dpo_weight * term
        totals["dpo_loss"] += term.item() * share
        totals["reward_margin"] += (chosen_r - rejected_r).mean().item() * share
    (loss * (mb.weight / n)).backward()
    totals["loss"] += loss.item() * share


def apply_lora(genrm: GenRM, settings: LoraSettings | None = None) -> GenRM:
    """Wrap the model with trainable LoRA adapters (base weights frozen)."""
    from peft import LoraConfig, get_peft_model

    s = settings or LoraSettings()
    config = LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=s.target_modules)
    genrm.model = get_peft_model(genrm.model, config)
    return genrm


def save_adapter(genrm: GenRM, directory: str | Path) -> Path:
    """Save only the LoRA adapter; ``GenRM.load(base, adapter=directory)`` restores it."""
    genrm.model.save_pretrained(str(directory))
    return Path(directory)


def enable_gradient_checkpointing(genrm: GenRM) -> None:
    """Trade compute for activation memory on large models."""
    model = genrm.model
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    genrm.model.config.use_cache = False

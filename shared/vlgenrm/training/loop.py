"""The Ray Train worker: one process per worker runs :func:`train_loop_per_worker`.

Every worker loads the start checkpoint, streams its share of each global batch from the
store, and steps in lockstep with the others (DDP all-reduce, or FSDP). Rank 0 writes a
resumable checkpoint every ``checkpoint_every`` steps through Ray Train's storage; a restarted
run gets the latest one from ``ray.train.get_checkpoint()`` and continues at its step with the
same data order. The last checkpoint also holds the exported Hugging Face model (``model/``).
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vlgenrm.genrm.config import Backend
from vlgenrm.settings import StoreSettings
from vlgenrm.training.config import Objective, Precision, Schedule, Strategy, TrainingConfig, TrainingTaskSettings

log = logging.getLogger(__name__)

STATE = "trainer_state.json"
WEIGHTS = "model.pt"
OPTIMIZER = "optimizer.pt"
EXPORT = "model"  # the HF-format export inside the final checkpoint


class WorkerJob(BaseModel):
    """Everything a worker needs, as plain JSON (it crosses process and machine boundaries)."""

    model_config = ConfigDict(extra="forbid")
    task: TrainingTaskSettings
    store: dict[str, Any] = Field(description="StoreSettings with the secret in clear: workers open the store themselves.")
    data_key: str = Field(description="Store key of the checked training set (JSON lines).")
    label: str = Field("", description="Shown in worker logs, e.g. the shard key.")


class LossPoint(BaseModel):
    step: int
    loss: float
    lr: float


class TrainerState(BaseModel):
    """Where a run is; saved in every checkpoint and continued on resume."""

    step: int = 0
    total_steps: int
    samples: int = 0
    skipped: dict[str, int] = Field(default_factory=dict, description="Examples skipped by workers, by reason.")
    history: list[LossPoint] = Field(default_factory=list)
    train_seconds: float = 0.0
    threads: int = Field(0, ge=0, description="torch intra-op threads per worker (threads_for(cpus_per_worker)); 0 before the first step.")
    finished: bool = False


def plan(records: int, config: TrainingConfig) -> tuple[int, int]:
    """(steps per epoch, total optimizer steps) for ``records`` examples."""
    per_epoch = max(1, records // config.batch_size)  # a set smaller than one batch wraps around
    return per_epoch, config.max_steps or per_epoch * config.epochs


def batch_indices(step: int, records: int, config: TrainingConfig) -> list[int]:
    """The global batch of optimizer step ``step``: a seeded permutation per epoch, so a resumed
    run sees exactly the batches the killed one would have."""
    per_epoch, _ = plan(records, config)
    epoch, within = divmod(step, per_epoch)
    order = list(range(records))
    random.Random(f"{config.seed}/{epoch}").shuffle(order)
    start = within * config.batch_size
    return [order[(start + j) % records] for j in range(config.batch_size)]


def worker_share(indices: list[int], rank: int, world: int) -> list[int]:
    """A worker's contiguous slice of the global batch."""
    per = len(indices) // world
    return indices[rank * per : (rank + 1) * per]


def learning_rate(step: int, total: int, config: TrainingConfig) -> float:
    """Multiplier of the peak rate at optimizer step ``step`` (0-based)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule is Schedule.COSINE:
        span = max(1, total - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - config.warmup_steps) / span)))
    return 1.0


def threads_for(cpus: float) -> int:
    """torch intra-op threads for a worker that reserved ``cpus`` CPUs (at least one)."""
    return max(1, int(cpus))


def train_loop_per_worker(raw: dict[str, Any]) -> None:
    """Ray Train entry point (``TorchTrainer(train_loop_per_worker, train_loop_config=job)``)."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    from vlgenrm.genrm.model import GenRM
    from vlgenrm.genrm.training import SFTCollator, StepSettings, apply_lora, enable_gradient_checkpointing, train_step
    from vlgenrm.store import make_store
    from vlgenrm.training.data import RecordSource

    job = WorkerJob.model_validate(raw)
    config = job.task.training
    ctx = ray.train.get_context()
    rank, world, local_rank = ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s")
    if world != config.workers:
        raise RuntimeError(f"started with {world} workers but the config asks for {config.workers}")
    device = ray.train.torch.get_device()
    # torch defaults to one thread per core of the machine, not per CPU the worker reserved; on a
    # busy CPU node the extra threads spin against each other (issue 14 measured a step at 2.49 s
    # with two threads under load, 0.33 s with one).
    torch.set_num_threads(threads_for(config.cpus_per_worker))
    torch.manual_seed(config.seed)
    store = make_store(StoreSettings.model_validate(job.store))
    # Training needs the weights: a spec's vllm backend (for scoring stages) does not reach here.
    genrm_settings = job.task.genrm.model_copy(update={"device": str(device), "max_length": config.max_length, "backend": Backend.TRANSFORMERS})

    # One download per machine: the checkpoint cache is shared by the workers on a node.
    if local_rank != 0:
        dist.barrier()
    genrm = GenRM.load(job.task.init_model, genrm_settings, store=store)
    if local_rank == 0 and world > 1:
        dist.barrier()
    reference = GenRM.load(job.task.init_model, genrm_settings, store=store).model if config.objective is Objective.SFT_DPO else None
    if reference is not None:
        reference.requires_grad_(False)
    if config.lora is not None:
        apply_lora(genrm, config.lora)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(genrm)
    if config.strategy is Strategy.FSDP and world > 1:
        model = _fully_shard(genrm.model.to(device))
    else:
        model = ray.train.torch.prepare_model(genrm.model, parallel_strategy="ddp")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)

    source = RecordSource(store, job.data_key, image_size=config.image_size)
    per_epoch, total = plan(len(source), config)
    state = TrainerState(total_steps=total)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            d = Path(directory)
            state = TrainerState.model_validate_json((d / STATE).read_text())
            model_sd = torch.load(d / WEIGHTS, map_location="cpu", weights_only=True)
            optim_sd = torch.load(d / OPTIMIZER, map_location="cpu", weights_only=False)
            set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=StateDictOptions(full_state_dict=True))
        log.info("%s: resumed at step %d of %d", job.label, state.step, state.total_steps)
    else:
        log.info(
            "%s: %d records, %d steps (%d per epoch), global batch %d = %d workers x %d micro-batches x %d",
            job.label,
            len(source),
            total,
            per_epoch,
            config.batch_size,
            world,
            config.accumulation,
            config.micro_batch_size,
        )
    state.threads = torch.get_num_threads()

    use_bf16 = config.precision is Precision.BF16 or (config.precision is Precision.AUTO and device.type == "cuda")
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    no_sync = getattr(model, "no_sync", None) if config.strategy is Strategy.DDP and world > 1 else None
    # The saved counts are all workers' together: one rank carries them on.
    steps = StepData(source, SFTCollator(genrm), config, reference, rank, world, dict(state.skipped) if rank == 0 else {})
    skipped = steps.skipped
    step_settings = StepSettings(
        objective=config.objective,
        loss_average=config.loss_average,
        dpo_beta=config.dpo_beta,
        dpo_weight=config.dpo_weight,
        verdict_weight=config.verdict_weight,
        max_grad_norm=config.max_grad_norm,
    )

    started = time.monotonic()
    done_at_start = state.step
    for step in range(state.step, total):
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * learning_rate(step, total, config)
        batches = steps.micro_batches(step)
        with autocast():
            metrics = train_step(model, optimizer, batches, step_settings, no_sync=no_sync)
        state.step = step + 1
        state.samples += config.batch_size
        if state.step % config.log_every == 0 or state.step == total:
            loss = _mean_over_workers(metrics["loss"], world)
            state.history.append(LossPoint(step=state.step, loss=loss, lr=optimizer.param_groups[0]["lr"]))
            elapsed = time.monotonic() - started
            rate = (state.step - done_at_start) * config.batch_size / max(elapsed, 1e-9)
            log.info("%s: step %d/%d loss %.4f lr %.2e %.1f samples/s", job.label, state.step, total, loss, optimizer.param_groups[0]["lr"], rate)
            report = {"step": state.step, "loss": loss, "samples_per_s": rate}
        else:
            report = None
        is_checkpoint = state.step % config.checkpoint_every == 0 or state.step == total
        if is_checkpoint:
            state.train_seconds += time.monotonic() - started
            started = time.monotonic()
            done_at_start = state.step
            state.skipped = _sum_over_workers(skipped, world)
            state.finished = state.step == total
            _checkpoint(model, optimizer, genrm, state, options, rank, config, report or {"step": state.step}, job, get_state_dict)
        elif report is not None:
            ray.train.report(report)
    if state.step == total and not state.finished:
        # Resumed from the final checkpoint of a run whose driver died before collecting it:
        # report it again so this run ends with the exported model.
        state.finished = True
        _checkpoint(model, optimizer, genrm, state, options, rank, config, {"step": state.step}, job, get_state_dict)


class StepData:
    """A worker's micro-batches for each optimizer step: its share of the global batch, as
    SFT examples (records whose image or length the GenRM rejects are dropped and counted)."""

    def __init__(
        self, source: Any, collator: Any, config: TrainingConfig, reference: Any = None, rank: int = 0, world: int = 1, skipped: dict[str, int] | None = None
    ) -> None:
        self.source, self.collator, self.config, self.reference, self.rank, self.world = source, collator, config, reference, rank, world
        self.skipped: dict[str, int] = skipped if skipped is not None else {}
        self._last_good: Any = None

    def micro_batches(self, step: int) -> list[Any]:
        config = self.config
        share = worker_share(batch_indices(step, len(self.source), config), self.rank, self.world)
        out = []
        for start in range(0, len(share), config.micro_batch_size):
            examples = []
            for i in share[start : start + config.micro_batch_size]:
                for example in _examples(self.source, self.source.records[i], config, self.skipped):
                    examples.extend([example, example.swapped()] if config.both_orders else [example])
            out += self._bucketed(examples) if self.reference is None and config.length_buckets > 1 else [self._collated(examples)]
        return out

    def _collated(self, examples: list[Any]) -> Any:
        batch = _collate(self.collator, examples, self.reference, self.skipped, alternatives=self.config.verdict_weight > 0)
        if batch is None:
            # Workers step in lockstep: run a zero-weight copy of the last good batch.
            if self._last_good is None:
                raise RuntimeError("the first micro-batch of this worker has no usable example")
            last = self._last_good
            return replace(last, weight=0.0)
        self._last_good = batch
        return batch

    def _bucketed(self, examples: list[Any]) -> list[Any]:
        """One micro-batch as ``length_buckets`` forward passes of similar lengths, so a bare
        verdict is not padded to a critique's length. Each pass is weighted by its share of
        what the loss averages over (rows or target tokens), so the step's loss and gradient
        are the unsplit micro-batch's. Always that many passes (an empty one is a zero-weight
        stand-in): workers step in lockstep."""
        from vlgenrm.genrm.config import LossAverage
        from vlgenrm.genrm.model import IGNORE

        k = self.config.length_buckets
        ranked = sorted(examples, key=lambda ex: len(ex.target) + len(ex.question) + sum(map(len, ex.responses)))
        size = -(-len(ranked) // k)
        batches = [self._collated(ranked[i * size : (i + 1) * size]) for i in range(k)]
        per_token = self.config.loss_average is LossAverage.TOKEN

        def mass(b: Any) -> float:
            if not b.weight:
                return 0.0
            labels = b.sft["labels"][:, 1:] != IGNORE
            return float(labels.sum() if per_token else (labels.sum(-1) > 0).sum())

        masses = [mass(b) for b in batches]
        total = sum(masses)
        for b, m in zip(batches, masses, strict=True):
            b.weight = k * m / total if total else 0.0
        return batches


def _fully_shard(model: Any) -> Any:
    """FSDP2: shard every transformer block, then the rest. Works on GPUs (NCCL) and CPUs
    (gloo), unlike Ray's ``prepare_model(parallel_strategy="fsdp")``, which is GPU-only."""
    from torch.distributed.fsdp import fully_shard

    blocks = [m for m in model.modules() if type(m).__name__.endswith(("DecoderLayer", "VisionBlock", "EncoderLayer"))]
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    log.info("FSDP: sharded %d blocks and the root module", len(blocks))
    return model


def _examples(source: Any, record: Any, config: TrainingConfig, skipped: dict[str, int]) -> list[Any]:
    """The SFT examples of one record: its critique, and with ``direct_verdict`` its bare verdict."""
    from vlgenrm.contracts import Choice
    from vlgenrm.genrm.training import SFTExample
    from vlgenrm.genrm.verdicts import verdict_line

    image = source.fetch(record)
    if image is None:
        skipped["image_unavailable"] = skipped.get("image_unavailable", 0) + 1
        return []
    shown = {"image": image, "question": record.question, "responses": (record.response_a, record.response_b)}
    out = [SFTExample(**shown, target=record.target, rejected=record.rejected)]
    if config.direct_verdict:
        other = Choice.B if record.verdict is Choice.A else Choice.A
        out.append(SFTExample(**shown, target=verdict_line(record.verdict.value), rejected=verdict_line(other.value)))
    return out


def _collate(collator: Any, examples: list[Any], reference: Any, skipped: dict[str, int], *, alternatives: bool = False) -> Any:
    """Collate a micro-batch; examples the GenRM rejects (bad image, too long) are dropped and counted."""
    from vlgenrm.genrm.errors import GenRMInputError
    from vlgenrm.genrm.training import make_batch

    if reference is not None:
        missing = [ex for ex in examples if not ex.rejected]
        if missing:
            skipped["no_rejected_for_dpo"] = skipped.get("no_rejected_for_dpo", 0) + len(missing)
            examples = [ex for ex in examples if ex.rejected]
    if not examples:
        return None
    try:
        return make_batch(collator, examples, reference, alternatives=alternatives)
    except GenRMInputError:
        good = []
        for ex in examples:
            try:
                collator([ex])
                good.append(ex)
            except GenRMInputError as exc:
                reason = type(exc).__name__
                skipped[reason] = skipped.get(reason, 0) + 1
                log.warning("skipping an example: %s", exc)
        return make_batch(collator, good, reference, alternatives=alternatives) if good else None


def _mean_over_workers(value: float, world: int) -> float:
    if world == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world


def _sum_over_workers(counts: dict[str, int], world: int) -> dict[str, int]:
    """Skip counts of all workers (each worker sees only its own examples)."""
    if world == 1:
        return dict(counts)
    import torch.distributed as dist

    gathered: list[dict[str, int] | None] = [None] * world
    dist.all_gather_object(gathered, counts)
    total: dict[str, int] = {}
    for part in gathered:
        for k, v in (part or {}).items():
            total[k] = total.get(k, 0) + v
    return total


def _checkpoint(
    model: Any,
    optimizer: Any,
    genrm: Any,
    state: TrainerState,
    options: Any,
    rank: int,
    config: TrainingConfig,
    metrics: dict[str, Any],
    job: WorkerJob,
    get_state_dict: Any,
) -> None:
    """Every rank joins (FSDP gathers the full state); rank 0 writes and hands the folder to Ray."""
    import ray.train
    import torch

    model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
    with tempfile.TemporaryDirectory(prefix="vlgenrm-ckpt-") as directory:
        d = Path(directory)
        checkpoint = None
        if rank == 0:
            torch.save(model_sd, d / WEIGHTS)
            torch.save(optim_sd, d / OPTIMIZER)
            (d / STATE).write_text(state.model_dump_json(indent=1))
            if state.finished:
                _export(genrm, model_sd, config, job, d / EXPORT)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics | {"checkpoint_step": state.step}, checkpoint=checkpoint)


def _export(genrm: Any, model_sd: dict[str, Any], config: TrainingConfig, job: WorkerJob, directory: Path) -> None:
    """The trained model in Hugging Face format (LoRA merged), loadable by GenRM.load and vLLM."""
    from vlgenrm.genrm.model import GenRM
    from vlgenrm.genrm.training import apply_lora
    from vlgenrm.store import make_store

    # A fresh CPU copy takes the gathered weights: the same path for DDP, FSDP and LoRA, and
    # the training replica (possibly sharded, on a GPU) is left alone.
    cpu = job.task.genrm.model_copy(update={"device": "cpu", "backend": Backend.TRANSFORMERS})
    fresh = GenRM.load(job.task.init_model, cpu, store=make_store(StoreSettings.model_validate(job.store)))
    if config.lora is not None:
        apply_lora(fresh, config.lora)
    fresh.model.load_state_dict(model_sd)
    fresh.save(directory)

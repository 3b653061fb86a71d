"""Helpers of the stage-service tests: a synthetic dataset in the platform's store, one experts
task run to completion, the events the services announced, a stage task by hand."""

from __future__ import annotations

from tests.services.conftest import Platform
from tests.support.bus import drain
from vlgenrm.contracts import ShardRef, Stage, StageEvent, StageTask
from vlgenrm.services.experts.service import build_worker
from vlgenrm.stages import stage_prefix
from vlgenrm.synth.dataset import SynthConfig, generate_dataset


def synth(platform: Platform, n: int = 12, **kw) -> list[str]:
    manifest = generate_dataset(SynthConfig(name="svc", n_train=n, n_eval=0, shard_size=n, seed=3, **kw), platform.store)
    return manifest.splits["train"].shards


def run_one(platform: Platform, n_messages: int = 1) -> None:
    build_worker(platform.settings, platform.bus, platform.store).run(max_messages=n_messages, idle_timeout_s=60)


def events(platform: Platform, n: int, group: str) -> list[StageEvent]:
    with platform.bus.consumer([platform.topics.events], group) as consumer:
        return [StageEvent.model_validate_json(r.value) for r in drain(consumer, n, timeout_s=30)]


def task(platform: Platform, stage: Stage, inputs: list[str], config: dict, t: int = 0) -> StageTask:
    ref = ShardRef(namespace="test", iteration="e2e", stage=stage, shard=0)
    return StageTask(
        task_id=f"e2e-{stage.value}-0",
        shard=ref,
        shard_count=1,
        iteration_index=t,
        inputs=[platform.store.uri(k) for k in inputs],
        output_prefix=stage_prefix(ref) + "/",
        config=config,
        created_at="2026-11-26T00:00:00Z",
    )

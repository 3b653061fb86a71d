"""Bus test helpers: a numbered StageTask, and draining a consumer."""

from __future__ import annotations

import time

from vlgenrm.bus import Consumer, Record
from vlgenrm.contracts import ShardRef, Stage, StageTask


def task(i: int) -> StageTask:
    shard = ShardRef(namespace="test", iteration="it", stage=Stage.EXPERTS, shard=i)
    return StageTask(task_id=f"task-{i}", shard=shard, shard_count=100, inputs=[f"s3://b/in/{i}"], output_prefix="out/")


def drain(consumer: Consumer, want: int, timeout_s: float = 60.0, commit: bool = True) -> list[Record]:
    """Poll until ``want`` records arrived (or time runs out), committing as we go."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        records = consumer.poll(0.5, 100)
        got += records
        if records and commit:
            consumer.commit(records)
    return got

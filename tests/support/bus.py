"""Bus test helpers: a numbered StageTask, draining a consumer, and the fuzz corpus."""

from __future__ import annotations

import time
from pathlib import Path

from vlgenrm.bus import Consumer, Record
from vlgenrm.contracts import DeadLetterReason, ShardRef, Stage, StageTask


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


#: The fuzz corpus: one file per input every consumer must dead-letter, named
#: ``<reason>--<case>.bin``. tests/bus/test_codec.py decodes each; tests/bus/test_worker.py
#: replays all of them through a real consumer. A new input that hypothesis or a user finds
#: goes in as a file.
CORPUS = Path(__file__).resolve().parents[1] / "bus" / "corpus"


def corpus(reason: DeadLetterReason) -> dict[str, bytes]:
    """The corpus inputs of one dead-letter reason, by case name."""
    return {path.stem.split("--", 1)[1]: path.read_bytes() for path in sorted(CORPUS.glob(f"{reason.value}--*.bin"))}

"""Child-process programs for tests/bus (run as ``python -m tests.bus.child MODE JSON``)."""

from __future__ import annotations

import json
import sys
import time

from tests.support.bus import task
from vlgenrm.bus import MemoryBus, Record, Worker, make_bus
from vlgenrm.contracts import StageTask
from vlgenrm.retry import Backoff
from vlgenrm.settings import BusKind, BusSettings, WorkerSettings


def consume_no_commit(args: dict) -> None:
    bus = make_bus(BusSettings(**args["settings"]))
    consumer = bus.consumer([args["topic"]], args["group"])
    values: list[int] = []
    deadline = time.monotonic() + 60
    while len(values) < args["n"] and time.monotonic() < deadline:
        values += [int(r.value) for r in consumer.poll(0.5, 100)]
    print("RECEIVED " + json.dumps(values), flush=True)
    time.sleep(3600)  # wait for SIGKILL, still a live group member until then


def sigterm_worker(args: dict) -> None:
    """A worker whose handler takes a while; the parent sends SIGTERM during message 1."""
    settings = BusSettings(**args["settings"])
    bus = make_bus(settings)
    topic, group, n = args["topic"], args["group"], args["n"]
    if settings.kind is BusKind.MEMORY:  # the in-process bus has to be filled here
        for i in range(n):
            bus.publish(topic, task(i).shard.key, task(i))
    done: list[int] = []

    def handle(message: StageTask, record: Record) -> None:
        i = message.shard.shard
        print(f"START {i}", flush=True)
        time.sleep(args["handle_s"])
        done.append(i)
        print(f"DONE {i}", flush=True)

    worker = Worker(
        bus,
        [topic],
        group,
        StageTask,
        handle,
        dlq_topic=topic + ".dlq",
        settings=WorkerSettings(poll_timeout_s=0.2, max_records=n, retry=Backoff(max_attempts=1)),
    )
    stats = worker.run()
    committed = sum(bus.committed_offsets(group, topic).values())
    print("RESULT " + json.dumps({"done": done, "committed": committed, "processed": stats.processed}), flush=True)
    if isinstance(bus, MemoryBus):
        assert bus.lag(group, topic) == n - len(done)
    bus.close()


if __name__ == "__main__":
    mode, raw = sys.argv[1], json.loads(sys.argv[2])
    {"consume-no-commit": consume_no_commit, "sigterm-worker": sigterm_worker}[mode](raw)

"""Experts stage throughput: through the service (bus + store + markers + events) vs the
library called directly on the same images, measured in one run.

    .venv/bin/python benchmarks/experts_service.py [--examples 64] [--shard-size 16]

The service path runs on the embedded platform (MemoryBus + LocalStore), so the ratio shows
the service's own overhead: decoding tasks, reading shards and images from the store,
writing outputs, markers and events.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time

from vlgenrm.bus import MemoryBus, Topics
from vlgenrm.contracts import ShardRef, Stage, StageTask
from vlgenrm.experts.pipeline import Annotator, decode_image
from vlgenrm.services.experts.service import build_worker
from vlgenrm.settings import Settings
from vlgenrm.store import LocalStore
from vlgenrm.synth.dataset import SynthConfig, generate_dataset, load_examples, load_shard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        manifest = generate_dataset(SynthConfig(name="bench", n_train=args.examples, n_eval=0, shard_size=args.shard_size, seed=5), store)
        shards = manifest.splits["train"].shards
        annotator = Annotator()
        warm = load_shard(store, shards[0])[:2]
        annotator.annotate(warm, [decode_image(store.get_image(e.image)) for e in warm], datetime.datetime.now(datetime.UTC))

        examples = load_examples(store, "bench", "train")
        start = time.perf_counter()
        images = [decode_image(store.get_image(e.image)) for e in examples]
        annotator.annotate(examples, images, datetime.datetime.now(datetime.UTC))
        t_library = time.perf_counter() - start

        settings = Settings()
        bus, topics = MemoryBus(), Topics(settings.bus.topic_prefix)
        for i, key in enumerate(shards):
            ref = ShardRef(namespace="bench", iteration="it", stage=Stage.EXPERTS, shard=i)
            task = StageTask(task_id=f"bench-{i}", shard=ref, shard_count=len(shards), inputs=[store.uri(key)], output_prefix="x/")
            bus.publish(topics.tasks(Stage.EXPERTS), ref.key, task)
        worker = build_worker(settings, bus, store)
        start = time.perf_counter()
        stats = worker.run(max_messages=len(shards), idle_timeout_s=30)
        t_service = time.perf_counter() - start
        assert stats.processed == len(shards), stats

    n = len(examples)
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs; experts: colour/shape + OCR (rapidocr, tesseract where installed)")
    print(f"{n} synthetic examples in {len(shards)} shards of {args.shard_size}")
    print(f"  library, direct          : {n / t_library:6.2f} images/s ({t_library:.1f} s)")
    print(f"  service, MemoryBus+Local : {n / t_service:6.2f} images/s ({t_service:.1f} s)")
    print(f"  service / library        : {t_library / t_service:6.3f}")


if __name__ == "__main__":
    main()

"""Trainer service: a training task becomes an exported checkpoint that loads and scores;
bad records are counted and skipped; a set with nothing usable fails with the reason; SIGKILL
mid-run and a restart resume from the last checkpoint (real Kafka + S3 + local Ray)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import REPO
from tests.services.conftest import Platform
from tests.support.bus import drain
from tests.support.procs import service_env
from tests.support.services import events
from tests.training.conftest import synth
from vlgenrm.contracts import DeadLetter, DeadLetterReason, EventType, FailureReason, ShardDone, ShardRef, Stage, StageTask
from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.model import GenRM, PairwiseQuery, checkpoint_version, upload_checkpoint
from vlgenrm.services.trainer.service import build_worker
from vlgenrm.stages import marker_key, stage_prefix
from vlgenrm.training.report import TrainingReport


def training_task(platform: Platform, inputs: list[str], config: dict, iteration: str = "train") -> StageTask:
    ref = ShardRef(namespace="test", iteration=iteration, stage=Stage.TRAINING, shard=0)
    return StageTask(task_id=f"{iteration}-training-0", shard=ref, shard_count=1, inputs=inputs, output_prefix=stage_prefix(ref) + "/", config=config)


def run_trainer(platform: Platform, task: StageTask) -> None:
    platform.bus.publish(platform.topics.tasks(Stage.TRAINING), task.shard.key, task)
    build_worker(platform.settings, platform.bus, platform.store).run(max_messages=1, idle_timeout_s=300)


def report_of(platform: Platform, task: StageTask) -> TrainingReport:
    return platform.store.get_model(f"{stage_prefix(task.shard)}/report/00000.json", TrainingReport)


@pytest.mark.slow
def test_training_task_exports_a_checkpoint_that_loads_and_scores(platform: Platform, local_ray, tiny_start):
    store = platform.store
    data = synth(store, n_train=12, n_eval=0)
    # One shard with a malformed line and a record whose image is gone: counted and skipped.
    gone = data.records[0].model_copy(update={"id": "gone", "image": data.records[0].image.model_copy(update={"key": "images/" + "f" * 64 + ".png"})})
    store.put_bytes("iterations/test/bad/sampling/00000.jsonl", b"{not a record\n" + gone.to_json_bytes() + b"\n")
    base = upload_checkpoint(tiny_start, store, "checkpoints/test/base/model")
    config = {"base_model": base, "training": {"batch_size": 4, "max_steps": 6, "checkpoint_every": 3, "log_every": 2, "learning_rate": 1e-3}}
    task = training_task(platform, data.uris + [store.uri("iterations/test/bad/sampling/00000.jsonl")], config)
    run_trainer(platform, task)

    [event] = events(platform, 1, "trainer-test")
    assert event.type is EventType.SHARD_DONE, event.message
    assert event.artifacts == {"checkpoint": store.uri("checkpoints/test/train/model")}
    assert event.metrics["steps"] == 6 and event.metrics["final_loss"] < event.metrics["first_loss"]
    done = store.get_model(marker_key(task.shard), ShardDone)
    assert (done.counts["records"], done.counts["usable"], done.counts["malformed"], done.counts["missing_images"]) == (26, 24, 1, 1)
    report = report_of(platform, task)
    assert report.state.step == 6 and [p.step for p in report.state.history] == [2, 4, 6]
    assert "1 malformed" in store.get_bytes(f"{stage_prefix(task.shard)}/report/00000.md").decode()
    assert store.get_bytes(f"{stage_prefix(task.shard)}/report/00000.png").startswith(b"\x89PNG")

    trained = GenRM.load(event.artifacts["checkpoint"], GenRMSettings(), store=store)
    assert trained.version == report.model_version != checkpoint_version(tiny_start)
    record = data.records[0]
    [p] = trained.pairwise_probs([PairwiseQuery(store.get_image(record.image), record.question, record.response_a, record.response_b)])
    assert 0.0 < p < 1.0


def test_a_training_set_with_nothing_usable_fails_with_the_reason(platform: Platform, tiny_start):
    platform.store.put_bytes("iterations/test/empty/sampling/00000.jsonl", b"{broken\n\n")
    task = training_task(platform, [platform.store.uri("iterations/test/empty/sampling/00000.jsonl")], {"base_model": str(tiny_start)}, "empty")
    run_trainer(platform, task)
    [event] = events(platform, 1, "trainer-test")
    assert event.type is EventType.SHARD_FAILED and event.reason is FailureReason.INVALID_INPUT
    assert "no usable records (1 lines: 1 malformed" in event.message
    with platform.bus.consumer([platform.topics.dlq], "dlq-reader") as consumer:
        [letter] = [DeadLetter.model_validate_json(r.value) for r in drain(consumer, 1, timeout_s=30)]
    assert letter.reason is DeadLetterReason.HANDLER_FAILED and "no usable records" in letter.detail


def test_an_invalid_training_config_fails_with_the_field(platform: Platform):
    task = training_task(platform, ["file:///nowhere"], {"base_model": "x", "training": {"batch_size": 3, "workers": 2}}, "badcfg")
    run_trainer(platform, task)
    [event] = events(platform, 1, "trainer-test")
    assert event.type is EventType.SHARD_FAILED and "multiple of workers x accumulation" in event.message


@pytest.mark.slow
@pytest.mark.integration
def test_sigkill_mid_training_then_restart_resumes_from_the_last_checkpoint(cluster: Platform, tiny_start):
    platform, store = cluster, cluster.store
    data = synth(store, n_train=24, n_eval=0)
    base = upload_checkpoint(tiny_start, store, "checkpoints/test/base/model")
    total = 40
    config = {"base_model": base, "training": {"batch_size": 4, "max_steps": total, "checkpoint_every": 5, "log_every": 5, "learning_rate": 1e-3}}
    task = training_task(platform, data.uris, config, "resume")
    platform.bus.publish(platform.topics.tasks(Stage.TRAINING), task.shard.key, task)

    def start() -> subprocess.Popen[str]:
        # Its own session, so the kill takes the service's local Ray (raylet, workers) with it.
        return subprocess.Popen(
            [sys.executable, "-m", "vlgenrm.services.trainer"],
            cwd=REPO,
            env=service_env(platform),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    first, seen = start(), []
    assert first.stdout is not None
    for line in first.stdout:
        seen.append(line)
        if f"step 10/{total}" in line:
            break
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    assert any(f"step 10/{total}" in line for line in seen), "".join(seen[-30:])
    assert not store.exists(marker_key(task.shard))
    assert any(o.key.endswith("trainer_state.json") for o in store.list("checkpoints/test/resume/ray/")), "no checkpoint reached S3"

    second, lines = start(), []
    reader = threading.Thread(target=lambda: lines.extend(second.stdout or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not store.exists(marker_key(task.shard)) and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(second.pid, signal.SIGTERM)
    second.wait(60)
    reader.join(10)
    resumed = [int(line.split("resumed at step")[1].split()[0]) for line in lines if "resumed at step" in line]
    # Worker logs reach the driver with a delay, so the kill lands at step 10 or a little later;
    # the restarted run must begin at a saved checkpoint (a multiple of 5), never at 0.
    print(f"\nkilled after step 10 was logged; the restarted run resumed at step {resumed[0]} of {total}")
    assert resumed and 5 <= resumed[0] < total and resumed[0] % 5 == 0, f"the restarted run began at {resumed}: {''.join(lines[-30:])}"
    report = report_of(platform, task)
    assert report.state.step == total
    # The loss history runs on from the killed run's checkpoint: nothing restarted from 0.
    assert [p.step for p in report.state.history] == list(range(5, total + 1, 5))

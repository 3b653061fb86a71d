"""The local driver runs the state machine over the in-process services on MemoryBus,
LocalStore and local Ray: two chained Iterations on tiny data and a tiny model."""

from __future__ import annotations

import pytest

from vlgenrm.bus import MemoryBus
from vlgenrm.contracts import ConditionType, Phase, Stage
from vlgenrm.evaluation.promotion import read_promoted
from vlgenrm.genrm.model import upload_checkpoint
from vlgenrm.iteration.local import LocalDriver, LocalServices
from vlgenrm.iteration.spec import IterationSpec
from vlgenrm.services import stage_workers
from vlgenrm.settings import BusSettings, Settings, StoreKind, StoreSettings, WorkerSettings
from vlgenrm.store import LocalStore
from vlgenrm.synth.dataset import SynthConfig, generate_dataset

pytestmark = pytest.mark.slow


def test_two_chained_iterations_run_to_success_and_promote(local_ray, tmp_path, tiny_start):
    store = LocalStore(tmp_path / "store")
    settings = Settings(
        bus=BusSettings(topic_prefix="drv"), store=StoreSettings(kind=StoreKind.LOCAL, root=tmp_path / "store"), worker=WorkerSettings(poll_timeout_s=0.1)
    )
    generate_dataset(SynthConfig(name="tiny", n_train=12, n_eval=8, image_size=192, shard_size=6), store)
    base = upload_checkpoint(tiny_start, store, "checkpoints/local/base/model")
    common = {
        "dataset": "tiny",
        "evalSet": "tiny",
        "rationale": {"k": 2, "both_orders": True},
        "sampling": {"tau0": -50.0},
        "training": {"batch_size": 4, "max_steps": 3, "learning_rate": 1e-4, "checkpoint_every": 3},
        "evaluation": {"pointwise": False},
    }
    bus = MemoryBus()
    driver, seen = LocalDriver(settings, bus, store), []
    with LocalServices(settings, bus, store, stage_workers()):
        first = driver.run("it-0", IterationSpec.model_validate(common | {"baseModel": base}), on_status=lambda s: seen.append(s.phase), timeout_s=600)
        assert first.phase is Phase.SUCCEEDED, first.message
        second = driver.run("it-1", IterationSpec.model_validate(common | {"baseModel": base, "previousIteration": "it-0", "index": 1}), timeout_s=600)
    assert second.phase is Phase.SUCCEEDED, second.message
    phases = list(dict.fromkeys(seen))
    assert phases[-1] is Phase.SUCCEEDED and phases.index(Phase.ANNOTATING) < phases.index(Phase.TRAINING) < phases.index(Phase.SUCCEEDED)
    for status in (first, second):
        assert {s: (p.shards_done, p.shards_total) for s, p in status.stages.items()} == {
            Stage.EXPERTS: (2, 2),
            Stage.RATIONALE: (2, 2),
            Stage.SAMPLING: (2, 2),
            Stage.TRAINING: (1, 1),
            Stage.EVALUATION: (1, 1),
        }
        assert 0.0 <= status.metrics["accuracy"] <= 1.0 and status.metrics["training.steps"] == 3
        assert {c.type for c in status.conditions} == set(ConditionType)
    assert first.checkpoint_uri == store.uri("checkpoints/local/it-0/model")
    # The second iteration sampled with M_1 (the first one's checkpoint), at index 1.
    task_config = store.get_bytes("iterations/local/it-1/sampling/report/00000.json")
    assert b'"iteration":1' in task_config.replace(b" ", b"")
    promoted = read_promoted(store, "local")
    assert promoted is not None and promoted.iteration in ("it-0", "it-1")

"""Training config, the data order that makes resumption exact, and the checks on the data."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from pydantic import ValidationError

from tests.training.conftest import put_training_set, synth
from vlgenrm.contracts import FailureReason
from vlgenrm.stages import InvalidShardError
from vlgenrm.training.config import Init, TrainingConfig, TrainingTaskSettings
from vlgenrm.training.data import RecordSource, load_training_set, write_training_set
from vlgenrm.training.loop import batch_indices, learning_rate, plan, worker_share


def test_global_batch_must_split_over_workers_and_accumulation():
    assert TrainingConfig(batch_size=8, workers=2, accumulation=2).micro_batch_size == 2
    with pytest.raises(ValidationError, match="multiple of workers x accumulation = 6"):
        TrainingConfig(batch_size=8, workers=3, accumulation=2)
    with pytest.raises(ValidationError):
        TrainingConfig(learning_rate=0)
    with pytest.raises(ValidationError):
        TrainingConfig(objective="ppo")


def test_init_previous_uses_the_previous_checkpoint_only_when_there_is_one():
    cfg = TrainingConfig(init=Init.PREVIOUS)
    assert TrainingTaskSettings(base_model="b", previous_model="p", training=cfg).init_model == "p"
    assert TrainingTaskSettings(base_model="b", training=cfg).init_model == "b"
    assert TrainingTaskSettings(base_model="b", previous_model="p").init_model == "b"


def test_digest_ignores_how_the_run_is_spread_but_not_what_it_learns():
    base = TrainingConfig(batch_size=8)
    assert base.digest() == TrainingConfig(batch_size=8, workers=2, accumulation=2, checkpoint_every=7).digest()
    assert base.digest() != TrainingConfig(batch_size=8, learning_rate=2e-5).digest()


def test_data_order_is_a_seeded_permutation_per_epoch():
    cfg = TrainingConfig(batch_size=4, epochs=2, seed=3)
    per_epoch, total = plan(10, cfg)
    assert (per_epoch, total) == (2, 4)
    epoch0 = batch_indices(0, 10, cfg) + batch_indices(1, 10, cfg)
    assert len(set(epoch0)) == 8  # no repeats within an epoch
    assert batch_indices(2, 10, cfg) != batch_indices(0, 10, cfg)  # reshuffled next epoch
    assert batch_indices(3, 10, cfg) == batch_indices(3, 10, cfg.model_copy())  # what a resumed run sees
    assert TrainingConfig(batch_size=4, max_steps=9).max_steps == 9 and plan(10, TrainingConfig(batch_size=4, max_steps=9))[1] == 9


def test_a_set_smaller_than_a_batch_wraps_around():
    cfg = TrainingConfig(batch_size=8)
    assert plan(3, cfg) == (1, 1)
    assert sorted(set(batch_indices(0, 3, cfg))) == [0, 1, 2]


def test_workers_split_the_global_batch_without_overlap():
    batch = batch_indices(0, 100, TrainingConfig(batch_size=8, workers=2))
    shares = [worker_share(batch, r, 2) for r in range(2)]
    assert shares[0] + shares[1] == batch


def test_warmup_and_cosine_schedule():
    cfg = TrainingConfig(warmup_steps=4, schedule="cosine")
    assert [learning_rate(s, 12, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(4, 12, cfg) == pytest.approx(1.0)
    assert learning_rate(11, 12, cfg) < 0.05
    assert learning_rate(100, 12, TrainingConfig()) == 1.0


def test_bad_records_are_counted_and_skipped(store):
    data = synth(store, "bad", n_train=8, n_eval=0)
    good = data.records[:10]
    missing = data.records[10].model_copy(update={"id": "gone", "image": data.records[10].image.model_copy(update={"key": "images/" + "0" * 64 + ".png"})})
    lines = (
        b"".join(r.to_json_bytes() + b"\n" for r in good)
        + b"{not json\n"
        + b'{"schema_version": 1, "id": "x"}\n'
        + good[0].to_json_bytes()
        + b"\n"
        + missing.to_json_bytes()
        + b"\n"
    )
    store.put_bytes("iterations/test/bad/sampling/00009.jsonl", lines)
    records, report = load_training_set(store, [store.uri("iterations/test/bad/sampling/00009.jsonl")])
    assert [r.id for r in records] == [r.id for r in good]
    assert (report.lines, report.usable, report.malformed, report.duplicates, report.missing_images) == (14, 10, 2, 1, 1)
    assert any("line 11" in p for p in report.problems) and any("gone" in p for p in report.problems)


def test_nothing_usable_or_a_missing_shard_fails_with_the_reason(store):
    store.put_bytes("iterations/test/x/sampling/00000.jsonl", b"{broken\n")
    with pytest.raises(InvalidShardError, match="no usable records .*1 malformed"):
        load_training_set(store, [store.uri("iterations/test/x/sampling/00000.jsonl")])
    with pytest.raises(InvalidShardError, match="does not exist") as info:
        load_training_set(store, [store.uri("iterations/test/x/sampling/00001.jsonl")])
    assert info.value.reason is FailureReason.MISSING_INPUT


def test_workers_stream_records_and_shrink_images(store):
    # Its own seed: images are content-addressed, so a dataset like another test's shares its objects.
    data = synth(store, "stream", n_train=4, n_eval=0, seed=20261126)
    write_training_set(store, "set.jsonl", data.records)
    source = RecordSource(store, "set.jsonl", image_size=64, cache_images=2)
    assert len(source) == len(data.records) == 8
    image = Image.open(io.BytesIO(source.image(source.records[0])))
    assert max(image.size) == 64
    for r in source.records:
        source.image(r)
    assert len(source._images) == 2  # bounded cache
    # Images are content-addressed and shared: tamper a copy, never the object other tests read.
    forged_key = "images/" + "e" * 64 + ".png"
    store.put_bytes(forged_key, b"tampered")
    forged = source.records[0].model_copy(update={"image": source.records[0].image.model_copy(update={"key": forged_key})})
    assert source.fetch(forged) is None  # digest mismatch: counted, not fatal


def test_training_set_helper_writes_shards(store):
    data = synth(store, "shards", n_train=4, n_eval=0)
    assert len(put_training_set(store, data.records, "x/y", shards=3)) == 3


@pytest.mark.parametrize(("average", "verdict_weight"), [("sequence", 0.0), ("token", 0.0), ("sequence", 2.0)])
def test_length_buckets_give_the_unsplit_steps_loss_and_gradient(tmp_path, average, verdict_weight):
    """A micro-batch run as length buckets (bare verdicts apart from critiques) is weighted so
    the step's loss and every gradient equal the one-pass step's, the verdict loss's too."""
    import torch

    from vlgenrm.genrm.config import GenRMSettings
    from vlgenrm.genrm.model import GenRM
    from vlgenrm.genrm.tiny import build_tiny_genrm
    from vlgenrm.genrm.training import SFTCollator, StepSettings, train_step
    from vlgenrm.store import LocalStore
    from vlgenrm.training.loop import StepData

    store = LocalStore(tmp_path / "store")
    data = synth(store, "buckets", n_train=6, n_eval=0, seed=20261201)
    write_training_set(store, "set.jsonl", data.records)
    source = RecordSource(store, "set.jsonl")
    genrm = GenRM.load(build_tiny_genrm(tmp_path / "tiny"), GenRMSettings())
    results = []
    for buckets in (1, 2, 3):
        config = TrainingConfig(batch_size=5, both_orders=True, loss_average=average, length_buckets=buckets, verdict_weight=verdict_weight)
        batches = StepData(source, SFTCollator(genrm), config).micro_batches(0)
        assert len(batches) == buckets  # always that many passes: workers step in lockstep
        genrm.model.zero_grad(set_to_none=True)
        optimizer = torch.optim.SGD(genrm.model.parameters(), lr=0.0)  # gradients only, weights stay
        grads = []
        original = optimizer.step
        optimizer.step = lambda grads=grads, original=original: (
            grads.extend(p.grad.clone() for p in genrm.model.parameters() if p.grad is not None) or original()
        )
        metrics = train_step(genrm.model, optimizer, batches, StepSettings(loss_average=average, verdict_weight=verdict_weight))
        assert ("verdict_loss" in metrics) is (verdict_weight > 0) and all(b.alternative_rows is not None for b in batches) is (verdict_weight > 0)
        results.append((metrics["loss"], grads))
    (loss_1, grads_1) = results[0]
    for loss_k, grads_k in results[1:]:
        assert loss_k == pytest.approx(loss_1, rel=1e-5)
        assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(grads_1, grads_k, strict=True))

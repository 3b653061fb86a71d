"""The ablation arms are honest: the no-experts arm never sees an expert report anywhere (labels,
teacher, evidence, sampler), so its training records carry the human labels' errors, while the
method's records are mostly right. Checked on the real stage code (the experts, rationale and
sampler stages, fed the tasks the state machine makes) over synthetic data with known truth."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from vlgenrm.bus import MemoryBus
from vlgenrm.cli.run.app import RunConfig, merge, variants
from vlgenrm.contracts import Choice, LabelSource, Order, Phase, RationaleCandidate, RefinedPair, Stage, TrainingRecord
from vlgenrm.genrm.model import upload_checkpoint
from vlgenrm.iteration.arms import Arm, arm_overrides
from vlgenrm.iteration.local import LocalDriver, LocalServices
from vlgenrm.iteration.machine import make_task
from vlgenrm.iteration.observe import MarkerCache, observe
from vlgenrm.iteration.spec import IterationSpec
from vlgenrm.rationale.config import TeacherView
from vlgenrm.services import stage_workers
from vlgenrm.services.experts.service import ExpertsStage
from vlgenrm.services.rationale.service import RationaleStage
from vlgenrm.services.sampler.service import SamplerStage
from vlgenrm.settings import BusSettings, Settings, StoreKind, StoreSettings, WorkerSettings
from vlgenrm.store import LocalStore
from vlgenrm.synth.dataset import SynthConfig, generate_dataset, load_truth

NS, WHEN = "arms", datetime(2026, 1, 1, tzinfo=UTC)
BASE = {"dataset": "arms", "evalSet": "arms", "baseModel": "checkpoints/none", "rationale": {"k": 2, "both_orders": True}}


def spec_of(arm: Arm) -> IterationSpec:
    return IterationSpec.model_validate(merge(BASE, arm_overrides(arm)))


# --------------------------------------------------------------------------- the arms as specs


def test_each_arm_says_what_it_sees():
    full, none_, no_ev, no_margin = (spec_of(a) for a in (Arm.EXPERTS, Arm.NO_EXPERTS, Arm.NO_EVIDENCE, Arm.NO_MARGIN))
    assert full.experts.enabled and full.rationale.teacher_sees is TeacherView.EXPERTS and full.rationale.with_evidence
    assert full.sampling.margin_filter and full.experts.refinement.policy.value == "flip"
    assert not none_.experts.enabled and none_.rationale.teacher_sees is TeacherView.LABEL and not none_.rationale.with_evidence
    assert no_ev.experts.enabled and no_ev.rationale.teacher_sees is TeacherView.LABEL and not no_ev.rationale.with_evidence
    assert no_margin.experts.enabled and no_margin.rationale.teacher_sees is TeacherView.EXPERTS and not no_margin.sampling.margin_filter
    no_vl = IterationSpec.model_validate(merge(merge(BASE, {"training": {"verdict_weight": 1.0}}), arm_overrides(Arm.NO_VERDICT_LOSS)))
    assert no_vl.training.verdict_weight == 0.0 and no_vl.experts.enabled and no_vl.sampling.margin_filter
    assert none_.rationale.k == 2 and none_.rationale.both_orders  # the base spec survives the merge
    assert arm_overrides("no-experts") == arm_overrides(Arm.NO_EXPERTS) and arm_overrides(Arm.NO_EXPERTS) is not arm_overrides(Arm.NO_EXPERTS)


def test_demo_variants_use_the_honest_no_experts_arm():
    assert variants(RunConfig()) == {"experts": {}}
    assert variants(RunConfig(ablate_experts=True)) == {"experts": {}, "no-experts": arm_overrides(Arm.NO_EXPERTS)}


def test_a_spec_without_experts_must_not_promise_the_teacher_a_report():
    with pytest.raises(ValidationError, match="teacherSees=label"):
        IterationSpec.model_validate(merge(BASE, {"experts": {"enabled": False}}))


def test_without_experts_the_rationale_task_names_no_reports_shard(tmp_path):
    store = LocalStore(tmp_path)
    generate_dataset(SynthConfig(name="arms", n_train=4, n_eval=0, shard_size=4), store)
    for arm, inputs in ((Arm.EXPERTS, 2), (Arm.NO_EXPERTS, 1)):
        obs = observe(store, spec_of(arm), NS, arm.value, failures=[], markers=MarkerCache())
        task = make_task(spec_of(arm), obs, Stage.RATIONALE, 0, 1, WHEN)
        assert len(task.inputs) == inputs and task.inputs[0].endswith("/experts/00000.jsonl")


# --------------------------------------------------------------------------- the stages, per arm


class ConstantMargins:
    """M_t stand-in for the sampler: the same margin for every candidate (above tau_0 = 0), so
    what is kept depends on the labels and the teacher only."""

    version = "constant"
    settings = SimpleNamespace(batch_size=8)

    def margins(self, queries, targets):
        return [1.0] * len(queries)


class Models:
    def get(self, model, settings):
        return ConstantMargins()


def run_arm(store: LocalStore, arm: Arm) -> IterationSpec:
    """experts -> rationale -> sampling for every shard, on the tasks the machine makes."""
    spec = spec_of(arm)
    processes = {
        Stage.EXPERTS: ExpertsStage(store).process,
        Stage.RATIONALE: RationaleStage(store).process,
        Stage.SAMPLING: SamplerStage(store, Models()).process,
    }
    for stage, process in processes.items():
        obs = observe(store, spec, NS, arm.value, failures=[], markers=MarkerCache())
        for shard in range(len(obs.dataset_shards)):
            result = process(make_task(spec, obs, stage, shard, 1, WHEN))
            for key, data in result.objects.items():
                store.put_bytes(key, data)
    return spec


def read(store: LocalStore, arm: Arm | str, stage: Stage, model, ns: str = NS):
    prefix = f"iterations/{ns}/{arm}/{stage.value}/"
    return [
        model.model_validate_json(line)
        for o in store.list(prefix)
        if "/" not in o.key[len(prefix) :] and o.key.endswith(".jsonl")
        for line in store.get_bytes(o.key).splitlines()
    ]


def original_verdict(record: TrainingRecord) -> Choice:
    if record.order is Order.AB:
        return record.verdict
    return Choice.B if record.verdict is Choice.A else Choice.A


@pytest.fixture(scope="module")
def arms(tmp_path_factory) -> tuple[LocalStore, dict]:
    store = LocalStore(tmp_path_factory.mktemp("arms"))
    generate_dataset(SynthConfig(name="arms", n_train=64, n_eval=0, image_size=192, shard_size=32, label_noise=0.3, seed=5), store)
    for arm in (Arm.EXPERTS, Arm.NO_EXPERTS):
        run_arm(store, arm)
    return store, load_truth(store, "arms", "train")


def wrong_share(store: LocalStore, arm: Arm | str, truth, ns: str = NS) -> tuple[float, int]:
    records = read(store, arm, Stage.SAMPLING, TrainingRecord, ns)
    wrong = sum(original_verdict(r) is not truth[r.example_id].better for r in records)
    return wrong / len(records), len(records)


@pytest.mark.slow
def test_the_no_experts_arm_trains_on_the_human_labels_errors(arms):
    store, truth = arms
    noise = sum(t.label_flipped for t in truth.values()) / len(truth)
    no_experts, n_none = wrong_share(store, Arm.NO_EXPERTS, truth)
    experts, n_full = wrong_share(store, Arm.EXPERTS, truth)
    print(
        f"\ntraining records against the truth: no-experts {1 - no_experts:.3f} right ({n_none} records), "
        f"experts {1 - experts:.3f} right ({n_full} records); human labels flipped: {noise:.3f}"
    )
    # The teacher rationalises every human label and the margins are constant: every pair gives
    # a record, and its verdict is the human label, right or wrong.
    assert n_none == len(truth) and no_experts == pytest.approx(noise)
    assert no_experts > 0.15
    assert experts < 0.05 and experts < no_experts / 3


@pytest.mark.slow
def test_no_expert_output_exists_for_the_no_experts_arm(arms):
    store, truth = arms
    experts_prefix = f"iterations/{NS}/{Arm.NO_EXPERTS.value}/experts/"
    keys = sorted(o.key for o in store.list(experts_prefix))
    assert keys == [f"{experts_prefix}00000.jsonl", f"{experts_prefix}00001.jsonl"], "no reports/ object, only the pairs"
    assert list(store.list(f"iterations/{NS}/{Arm.EXPERTS.value}/experts/reports/")), "the method does write reports"
    pairs = read(store, Arm.NO_EXPERTS, Stage.EXPERTS, RefinedPair)
    assert len(pairs) == len(truth)
    for p in pairs:
        assert p.source is LabelSource.HUMAN and p.report_id is None and p.expert_label is None
        assert p.label.value == p.example.human_label.value == truth[p.example.id].human_label.value
    for c in read(store, Arm.NO_EXPERTS, Stage.RATIONALE, RationaleCandidate):
        assert "expert" not in c.text.lower() and "p=" not in c.text


# --------------------------------------------------------------------------- whole Iterations


@pytest.mark.slow
def test_whole_iterations_of_both_arms_on_the_local_driver(local_ray, tmp_path, tiny_start):
    """The demo's variants as Iterations on the in-memory bus (experts, rationale, sampling with
    the tiny GenRM, training, evaluation): the same honesty, end to end."""
    root = tmp_path / "store"
    store = LocalStore(root)
    settings = Settings(bus=BusSettings(topic_prefix="arms"), store=StoreSettings(kind=StoreKind.LOCAL, root=root), worker=WorkerSettings(poll_timeout_s=0.1))
    generate_dataset(SynthConfig(name="arms", n_train=64, n_eval=8, image_size=192, shard_size=32, seed=5), store)
    truth = load_truth(store, "arms", "train")
    common = merge(
        BASE,
        {
            "baseModel": upload_checkpoint(tiny_start, store, "checkpoints/local/base/model"),
            # The tiny random GenRM's margins sum over the restated responses' tokens: keep every right verdict.
            "sampling": {"tau0": -1e6},
            "training": {"batch_size": 4, "max_steps": 2, "learning_rate": 1e-4, "checkpoint_every": 2},
            "evaluation": {"pointwise": False},
        },
    )
    bus = MemoryBus()
    driver = LocalDriver(settings, bus, store, "local")
    shares = {}
    with LocalServices(settings, bus, store, stage_workers()):
        for variant, overrides in variants(RunConfig(ablate_experts=True)).items():
            status = driver.run(
                variant, IterationSpec.model_validate(merge(common, overrides)), timeout_s=2400
            )  # ~90 s each alone; generous for a loaded machine
            assert status.phase is Phase.SUCCEEDED, status.message
            shares[variant] = wrong_share(store, variant, truth, "local")
    bus.close()
    noise = sum(t.label_flipped for t in truth.values()) / len(truth)
    print(
        f"\nwhole Iterations, training records right: no-experts {1 - shares['no-experts'][0]:.3f} "
        f"({shares['no-experts'][1]} records), experts {1 - shares['experts'][0]:.3f} ({shares['experts'][1]} records); flipped {noise:.3f}"
    )
    assert shares["no-experts"][0] == pytest.approx(noise) and shares["no-experts"][0] > 0.15
    assert shares["experts"][0] < 0.05
    assert not list(store.list("iterations/local/no-experts/experts/reports/"))
    assert list(store.list("iterations/local/experts/experts/reports/"))

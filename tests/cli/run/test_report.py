"""The run report: what it reads from the store, and numbers that cannot flatter a collapsed
model or a leaky control arm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlgenrm.cli.run.app import DEFAULT_SPEC, IterationResult, RunConfig, chain_namespace, merge, sampling_summary, training_label_accuracy
from vlgenrm.cli.run.report import IterationSummary, ablation_rows, load_summary, write_report
from vlgenrm.contracts import Choice, ImageRef, IterationReason, IterationStatus, Order, Phase, TrainingRecord
from vlgenrm.evaluation.run import EvaluationPrediction
from vlgenrm.sampling.sampler import CritiqueProbe, SamplingStats, ThresholdPoint
from vlgenrm.stages import jsonl
from vlgenrm.store import LocalStore


class _Truth:
    def __init__(self, better: Choice) -> None:
        self.better = better


def _record(i: int, order: Order, verdict: Choice) -> TrainingRecord:
    image = ImageRef(key="images/" + "0" * 64 + ".png", sha256="0" * 64, width=1, height=1)
    return TrainingRecord(
        id=f"r{i}",
        example_id=f"e{i}",
        pair_id=f"p{i}",
        candidate_id=f"c{i}",
        image=image,
        question="q",
        response_a="a",
        response_b="b",
        order=order,
        target=f"x\nVerdict: [[{verdict.value}]]",
        verdict=verdict,
    )


def test_training_label_accuracy_reads_verdicts_in_the_order_shown(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    truth = {f"e{i}": _Truth(Choice.A) for i in range(4)}
    records = [
        _record(0, Order.AB, Choice.A),
        _record(1, Order.BA, Choice.B),  # both right: B shown first is the true A
        _record(2, Order.AB, Choice.B),
        _record(3, Order.BA, Choice.A),
    ]  # both wrong
    store.put_bytes("iterations/ns/it/sampling/00000.jsonl", jsonl(records))
    store.put_bytes("iterations/ns/it/sampling/hard/00000.jsonl", b"not a record\n")  # other kinds are not read
    assert training_label_accuracy(store, "ns", "it", truth) == (4, 0.5)


def _result(variant: str, seed: int, index: int, accuracy: float, *, records_right: float) -> IterationResult:
    status = IterationStatus(
        phase=Phase.SUCCEEDED,
        reason=IterationReason.PROMOTED,
        metrics={"accuracy": accuracy, "accuracy.wrong_colour": accuracy, "sampling.hard": 2, "sampling.pairs": 10, "rationale.pairs_hard": 1},
    )
    return IterationResult(
        variant,
        index,
        f"demo-{variant}-s{seed}-{index}",
        status,
        10.0,
        seed=seed,
        training_records=8,
        training_label_accuracy=records_right,
        tau=0.5 * index,
        critique_probe=CritiqueProbe(candidates=4, mean_lift=-0.25, helped=0.25, rescued=0, sunk=1),
    )


def _predictions(store: LocalStore, namespace: str, name: str, ps: list[float]) -> None:
    preds = [
        EvaluationPrediction(example_id=f"x{i}", category="wrong_colour", p_first=p, better=0, correct=float(p > 0.5) if p != 0.5 else 0.5)
        for i, p in enumerate(ps)
    ]
    store.put_bytes(f"iterations/{namespace}/{name}/evaluation/00000.jsonl", jsonl(preds))


def test_report_and_summary(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    config = RunConfig(arms=["experts", "no-experts"], seeds=[0, 1], iterations=2)
    results = []
    for seed in (0, 1):
        for variant, acc, ps in (("experts", 0.9, [0.9] * 36 + [0.2] * 4), ("no-experts", 0.5, [0.5] * 40)):
            for t in (0, 1):
                r = _result(variant, seed, t, acc, records_right=1.0 if variant == "experts" else 0.6)
                _predictions(store, chain_namespace(config, variant, seed), r.name, ps)
                results.append(r)
    from vlgenrm.genrm.pretrain import BaseReport, CellAccuracy, PretrainConfig, Rung
    from vlgenrm.synth.vqa import VQAKind

    rung = Rung(kind=VQAKind.EXISTS, n=200, accuracy=0.98, low=0.95, high=0.99, chance=0.5)
    base = BaseReport(
        config=PretrainConfig(), digest="d", version="v", vision=CellAccuracy(shape=0.99, colour=1.0, word=0.8, empty=1.0), before=[rung], after=[rung]
    )
    path = write_report(results, config, tmp_path / "report", 120.0, store=store, base_report=base)
    text = path.read_text()
    assert "| exists | 0.50 |" in text and "Vision stage, held-out cells: shape 0.990" in text
    summary = load_summary(tmp_path / "report")
    assert {p.name for p in (tmp_path / "report").iterdir()} >= {"report.md", "summary.json", "accuracy.png", "confidence.png", "acceptance.png"}
    rows = {(r.variant, r.seed, r.index): r for r in summary.iterations}
    full, control = rows[("experts", 0, 1)], rows[("no-experts", 0, 1)]
    assert full.variant == "experts" and full.accuracy == 0.9 and full.n_eval == 40
    assert full.accuracy_low < 0.9 < full.accuracy_high and not full.collapsed
    assert control.collapsed and control.mean_confidence == 0.0  # the constant answer is called what it is
    assert full.per_type == {"wrong_colour": 0.9} and full.training_label_accuracy == 1.0 and control.training_label_accuracy == 0.6
    assert full.hard_pool == 2 and full.hard_pairs_retried == 1 and full.pair_acceptance == pytest.approx(0.8)
    assert sum(full.confidence_histogram) == 40
    ablation = {(a.variant, a.index): a for a in summary.ablations}
    assert ablation[("experts", 1)].seeds == 2 and ablation[("experts", 1)].accuracy_std == 0.0
    assert "collapsed" in text and "experts vs no-experts at t=1" in text and "do not overlap" in text
    assert "τ 0.0 → 0.5" in text  # what iteration 2 changed
    assert full.critique_lift == -0.25 and full.critique_helped == 0.25
    assert "experts t=1 -0.25 (raised 25%)" in text and "does not read the critiques" in text
    assert summary.text_only is not None and summary.text_only.n == config.data.n_eval and "Baseline: text alone" in text
    json.loads((tmp_path / "report" / "summary.json").read_text())  # machine-readable


def test_sampling_summary_pools_the_shards_reports(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    for shard, (n, lift, kept) in enumerate(((3, 1.0, 0.5), (1, -1.0, 1.0))):
        stats = SamplingStats(
            iteration=1,
            tau=0.5,
            model_version="m",
            pairs=2,
            candidates=4,
            unparseable=0,
            scored=4,
            accepted=2,
            kept=2,
            hard=0,
            dpo_pairs=0,
            acceptance_rate=0.5,
            pair_acceptance_rate=1.0,
            kept_ratio_by_threshold=[ThresholdPoint(tau=0.0, kept_ratio=kept)],
            critique_probe=CritiqueProbe(candidates=n, mean_lift=lift, helped=float(lift > 0), rescued=n, sunk=0),
        )
        store.put_bytes(f"iterations/ns/it/sampling/report/{shard:05d}.json", stats.model_dump_json().encode())
    curve, tau, probe = sampling_summary(store, "ns", "it")
    assert curve == [(0.0, 0.75)] and tau == 0.5
    assert probe is not None and probe.candidates == 4 and probe.mean_lift == pytest.approx(0.5) and probe.helped == 0.75 and probe.rescued == 4


def test_ablation_rows_mean_std_and_pooled_interval() -> None:
    rows = [
        IterationSummary(variant="experts", seed=s, index=0, name=f"n{s}", phase="Succeeded", accuracy=a, n_eval=100, mean_confidence=0.3)
        for s, a in enumerate([0.8, 0.9, 1.0])
    ]
    (row,) = ablation_rows(rows)
    assert row.seeds == 3 and row.accuracy_mean == pytest.approx(0.9) and row.accuracy_std == pytest.approx(0.1)
    assert row.accuracy_low < 0.9 < row.accuracy_high and row.accuracy_high - row.accuracy_low < 0.08  # 300 verdicts pooled


def test_run_config_arms_and_ablations() -> None:
    assert [a.value for a in RunConfig(ablate_experts=True).arms] == ["experts", "no-experts"]
    study = RunConfig.ablations()
    assert [a.value for a in study.arms] == ["experts", "no-experts", "no-evidence", "no-margin", "no-verdict-loss"] and study.seeds == [0, 1, 2]
    assert RunConfig().data.labeler.kind == "biased"  # the demo's default: the case the method exists for
    with pytest.raises(ValueError):
        RunConfig(arms=["no-such-arm"])


def test_runs_with_other_data_get_other_datasets_and_iteration_names() -> None:
    from vlgenrm.synth.dataset import LabelerConfig

    biased, uniform = RunConfig(), RunConfig()
    uniform = uniform.model_copy(update={"data": uniform.data.model_copy(update={"labeler": LabelerConfig()})})
    assert biased.dataset().name != uniform.dataset().name and biased.digest() != uniform.digest()
    assert RunConfig().digest() == biased.digest() and RunConfig().dataset() == biased.dataset()  # a rerun finds its own
    assert RunConfig(spec={"training": {"epochs": 1}}).digest() != biased.digest()
    # The spec counts with its defaults filled in: spelling a default out is the same run, so a
    # changed default (a new release) is another run, never the old one's results under its name.
    explicit = merge(DEFAULT_SPEC, {"training": {"loss_average": "sequence"}, "genrm": {"restate": True}})
    assert RunConfig(spec=explicit).digest() == biased.digest()
    assert RunConfig(spec=merge(DEFAULT_SPEC, {"training": {"loss_average": "token"}})).digest() != biased.digest()
    assert RunConfig(spec=merge(DEFAULT_SPEC, {"genrm": {"restate": False}})).digest() != biased.digest()


def test_a_changed_generator_gets_a_new_dataset_and_new_iteration_names(monkeypatch: pytest.MonkeyPatch) -> None:
    import vlgenrm.cli.run.app as demo

    dataset, names = RunConfig().dataset().name, RunConfig().digest()
    monkeypatch.setattr(demo, "GENERATOR_FORMAT", demo.GENERATOR_FORMAT + 1)
    assert RunConfig().dataset().name != dataset and RunConfig().digest() != names  # never stale data under an old name

"""The simulated annotator: uniform flips (unchanged bytes) and a biased labeler whose errors
are systematic by hallucination type (and length), changing labels only."""

from __future__ import annotations

from collections import defaultdict

import pytest
from pydantic import ValidationError

from vlgenrm.contracts import Choice
from vlgenrm.synth.dataset import DatasetManifest, LabelerConfig, SynthConfig, make_example
from vlgenrm.synth.scene import MIN_IMAGE_SIZE
from vlgenrm.synth.vocab import HallucinationType as H

#: Computed with the code before labelers existed (SynthConfig defaults, train split, 0..31); the
#: labels again when the hallucination type got a random stream of its own (the flips did not move).
PINNED_FLIPS = "01100011001000000100001100100000"
PINNED_LABELS = "ABABABAABBAAAAAABABBABBBABBABBAB"


def test_the_default_uniform_labeler_keeps_the_labels_it_always_gave():
    default = SynthConfig(n_train=32, n_eval=0)
    assert default.labeler == LabelerConfig() and default.labeler.kind == "uniform"
    out = [make_example(default, "train", i) for i in range(32)]
    assert "".join("1" if t.label_flipped else "0" for _, _, t in out) == PINNED_FLIPS
    assert "".join(ex.human_label.value for _, ex, _ in out) == PINNED_LABELS
    explicit = SynthConfig(n_train=32, n_eval=0, labeler=LabelerConfig(kind="uniform"))
    for i in (0, 7, 31):
        png, ex, truth = make_example(explicit, "train", i)
        assert (png, ex, truth) == out[i]


def test_biased_flip_rate_per_type_matches_its_config():
    labeler = LabelerConfig.colour_blind()
    config = SynthConfig(n_train=2000, n_eval=0, image_size=MIN_IMAGE_SIZE, labeler=labeler, label_noise=0.0)
    flips: dict[H, list[bool]] = defaultdict(list)
    for i in range(config.n_train):
        _, ex, truth = make_example(config, "train", i)
        assert (truth.human_label != truth.better) == truth.label_flipped
        assert ex.human_label.value == truth.human_label.value
        flips[truth.hallucination].append(truth.label_flipped)
    assert set(flips) == set(H)
    expected = {H.WRONG_COLOUR: 0.8, H.WRONG_COUNT: 0.6, H.WRONG_OBJECT: 0.05, H.WRONG_TEXT: 0.05}
    for kind, seen in flips.items():
        assert len(seen) > 350, kind
        rate = sum(seen) / len(seen)
        assert abs(rate - expected[kind]) < 0.06, (kind, rate, len(seen))
    # Systematic: a majority of the wrong-colour labels is wrong, so more data (or a vote of
    # such annotators) never recovers the truth for that type.
    assert sum(flips[H.WRONG_COLOUR]) / len(flips[H.WRONG_COLOUR]) > 0.7


def test_the_labeler_changes_labels_only():
    uniform = SynthConfig(n_train=40, n_eval=0, image_size=MIN_IMAGE_SIZE)
    biased = uniform.model_copy(update={"labeler": LabelerConfig.colour_blind()})
    changed = 0
    for i in range(40):
        png0, ex0, t0 = make_example(uniform, "train", i)
        png1, ex1, t1 = make_example(biased, "train", i)
        assert png0 == png1 and t0.scene == t1.scene and t0.better == t1.better and t0.hallucination == t1.hallucination
        assert ex0.model_dump(exclude={"human_label"}) == ex1.model_dump(exclude={"human_label"})
        changed += ex0.human_label != ex1.human_label
    assert changed > 0


def test_prefers_longer_pulls_labels_to_the_longer_response():
    labeler = LabelerConfig(kind="biased", base_rate=0.0, prefers_longer=1.0)
    config = SynthConfig(n_train=200, n_eval=0, image_size=MIN_IMAGE_SIZE, labeler=labeler)
    decided = 0
    for i in range(200):
        _, ex, truth = make_example(config, "train", i)
        a, b = len(ex.response_a.split()), len(ex.response_b.split())
        if a == b:
            assert not truth.label_flipped  # base rate 0, no length cue
            continue
        decided += 1
        assert truth.human_label is (Choice.A if a > b else Choice.B)
    assert decided > 50
    assert labeler.flip_probability(0.3, H.WRONG_TEXT, "one two", "one two three") == 1.0
    half = LabelerConfig(kind="biased", base_rate=0.2, prefers_longer=0.5)
    assert half.flip_probability(0.3, H.WRONG_TEXT, "one two", "one two three") == pytest.approx(0.6)
    assert half.flip_probability(0.3, H.WRONG_TEXT, "one two three", "one") == pytest.approx(0.1)
    assert half.flip_probability(0.3, H.WRONG_TEXT, "one", "two") == pytest.approx(0.2)
    assert LabelerConfig().flip_probability(0.3, H.WRONG_TEXT, "a", "b c d") == 0.3  # uniform: label_noise only


def test_a_biased_config_round_trips_in_the_manifest():
    config = SynthConfig(name="b", labeler=LabelerConfig.colour_blind())
    manifest = DatasetManifest(name="b", splits={}, config=config)
    again = DatasetManifest.model_validate_json(manifest.to_json_bytes())
    assert again.config == config and again.config.labeler.fooled[H.WRONG_COLOUR] == 0.8


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "uniform", "fooled": {"wrong_colour": 0.8}},  # bias fields without kind=biased
        {"kind": "uniform", "prefers_longer": 0.5},
        {"kind": "uniform", "base_rate": 0.2},
        {"kind": "biased", "fooled": {"wrong_colour": 1.5}},  # not a probability
        {"kind": "biased", "fooled": {"wrong_size": 0.5}},  # no such hallucination type
        {"kind": "biased", "base_rate": -0.1},
        {"kind": "biased", "prefers_longer": 2},
        {"kind": "sometimes"},
        {"kind": "biased", "fooledd": {}},  # typo: extra fields are rejected
    ],
)
def test_labeler_config_validation(fields):
    with pytest.raises(ValidationError):
        LabelerConfig(**fields)
    with pytest.raises(ValidationError):
        SynthConfig(labeler=fields)

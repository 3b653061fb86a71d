"""The text-only baseline: it finds a shortcut where there is one, and the generator has none."""

from __future__ import annotations

from vlgenrm.synth.dataset import SynthConfig
from vlgenrm.synth.shortcuts import FEATURES, TextBaseline, text_only_baseline, word_counts


def test_word_counts_count_what_they_name() -> None:
    counts = dict(zip(FEATURES, word_counts("I see 2 crimson discs. There is no sign."), strict=True))
    assert counts == {"words": 9, "colour words": 1, "digits": 1, "sentences": 2, "'no'": 1, "synonyms": 2}


def test_the_text_alone_is_at_chance_on_the_generator() -> None:
    baseline = text_only_baseline(SynthConfig(name="t", n_train=600, n_eval=400, image_size=192, label_noise=0.0))
    assert isinstance(baseline, TextBaseline) and baseline.n == 400 and set(baseline.per_type) == {"wrong_colour", "wrong_count", "wrong_object", "wrong_text"}
    assert baseline.low <= 0.5 <= baseline.high, baseline  # the response's wording does not give the answer away
    assert "text alone" in baseline.line()


def test_it_finds_a_shortcut_where_one_exists(monkeypatch) -> None:
    import vlgenrm.synth.shortcuts as shortcuts

    # Plant one: the better response (by construction, response A here) gets an extra word counted.
    monkeypatch.setattr(shortcuts, "make_example", _with_a_better(shortcuts.make_example))
    baseline = text_only_baseline(SynthConfig(name="t", n_train=200, n_eval=200, image_size=192, label_noise=0.0))
    assert baseline.accuracy > 0.9


def _with_a_better(make_example):
    from vlgenrm.contracts import Choice

    def planted(config, split, index):
        png, ex, truth = make_example(config, split, index)
        better = ex.response_a if truth.better is Choice.A else ex.response_b
        marked = better + " Indeed."
        if truth.better is Choice.A:
            return png, ex.model_copy(update={"response_a": marked}), truth
        return png, ex.model_copy(update={"response_b": marked}), truth

    return planted

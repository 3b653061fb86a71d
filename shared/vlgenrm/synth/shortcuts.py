"""How far the wording alone goes: a text-only baseline for the synthetic pairs.

A GenRM that beats chance may still not look at the image: if hallucinated responses were
longer, or said "no" less often, the text would give the answer away. This baseline is a
logistic regression on a few word counts of each response (their differences, A minus B),
fitted on the training split's *true* labels and scored on the held-out split, image unseen.
A model's accuracy shows that it sees only where it beats this one. (The generator was fixed
when this baseline read 0.642; it reads about 0.50 now, and tests/synth keeps it there.)
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from vlgenrm.contracts import Choice
from vlgenrm.synth.dataset import SynthConfig, make_example
from vlgenrm.synth.vocab import COLOUR_SYNONYMS, COLOURS, SHAPE_SYNONYMS

#: What is counted in each response, in the order of :func:`word_counts`.
FEATURES: tuple[str, ...] = ("words", "colour words", "digits", "sentences", "'no'", "synonyms")
_COLOURS = set(COLOURS) | set(COLOUR_SYNONYMS)
_SYNONYMS = set(COLOUR_SYNONYMS) | set(SHAPE_SYNONYMS)


def word_counts(text: str) -> list[float]:
    """The :data:`FEATURES` of one response."""
    words = re.findall(r"[a-z]+|\d+", text.lower())
    return [
        float(len(words)),
        float(sum(w in _COLOURS for w in words)),
        float(sum(w.isdigit() for w in words)),
        float(text.count(".")),
        float(words.count("no")),
        float(sum(_singular(w) in _SYNONYMS for w in words)),
    ]


def _singular(word: str) -> str:
    return word[:-2] if word.endswith("xes") else word[:-1] if word.endswith("s") else word


class TextBaseline(BaseModel):
    """Held-out pairwise accuracy of the text-only baseline."""

    accuracy: float = Field(ge=0, le=1)
    low: float = Field(ge=0, le=1, description="Wilson 95 % interval.")
    high: float = Field(ge=0, le=1)
    n: int = Field(ge=1, description="Held-out pairs scored.")
    per_type: dict[str, float] = Field(default_factory=dict, description="Accuracy per hallucination type.")
    weights: dict[str, float] = Field(default_factory=dict, description="Fitted weight per feature (standardised; > 0 favours response A having more).")

    def line(self) -> str:
        return (
            f"text alone (no image; a logistic regression on {len(FEATURES)} word counts, fitted on the training pairs' truth): "
            f"{self.accuracy:.3f} ({self.low:.3f}–{self.high:.3f}) on {self.n} held-out pairs"
        )


def _pairs(config: SynthConfig, split: str, n: int) -> tuple[list[list[float]], list[bool], list[str]]:
    x, y, kinds = [], [], []
    for i in range(n):
        _, ex, truth = make_example(config, split, i)
        x.append([a - b for a, b in zip(word_counts(ex.response_a), word_counts(ex.response_b), strict=True)])
        y.append(truth.better is Choice.A)
        kinds.append(truth.hallucination.value)
    return x, y, kinds


def text_only_baseline(config: SynthConfig) -> TextBaseline:
    """Fit on ``config``'s training split (true labels), score its held-out split."""
    import torch

    from vlgenrm.evaluation.metrics import wilson_interval

    if config.n_train < 2 or config.n_eval < 1:
        raise ValueError("the text-only baseline needs at least 2 training and 1 held-out pair")
    x, y, _ = _pairs(config, "train", config.n_train)
    xe, ye, kinds = _pairs(config, "eval", config.n_eval)
    features, labels = torch.tensor(x), torch.tensor(y, dtype=torch.float32)
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    w = torch.zeros(len(FEATURES), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=200)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits((features - mean) / std @ w + b, labels)
        value.backward()
        return value

    optimizer.step(loss)
    with torch.no_grad():
        said = (((torch.tensor(xe) - mean) / std @ w + b) > 0).tolist()
    right = [s == t for s, t in zip(said, ye, strict=True)]
    low, high = wilson_interval(sum(right), len(right))
    per_type: dict[str, list[bool]] = {}
    for kind, r in zip(kinds, right, strict=True):
        per_type.setdefault(kind, []).append(r)
    return TextBaseline(
        accuracy=sum(right) / len(right),
        low=low,
        high=high,
        n=len(right),
        per_type={k: sum(v) / len(v) for k, v in sorted(per_type.items())},
        weights={f: float(v) for f, v in zip(FEATURES, w.detach().tolist(), strict=True)},
    )

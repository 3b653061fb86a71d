"""The pluggable registry of vision experts (§5).

Each expert declares the claim types and labels it covers; :meth:`ExpertRegistry.verify`
hands every expert the claims it covers — one detection pass per image per expert — and
returns all verdicts. Several experts may judge the same claim; voting over them happens
downstream (§3.1 sums confidences). Claims no expert covers get no verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from vlgenrm.contracts import Claim, ExpertVerdict
from vlgenrm.errors import ConfigError
from vlgenrm.experts.base import Expert, as_rgb
from vlgenrm.experts.config import ExpertsSettings
from vlgenrm.experts.vocabulary import LabelSpace


class ExpertRegistry:
    """Experts by name, in registration order."""

    def __init__(self, experts: Iterable[Expert] = ()) -> None:
        self._experts: dict[str, Expert] = {}
        for expert in experts:
            self.register(expert)

    def register(self, expert: Expert) -> Expert:
        if expert.name in self._experts:
            raise ConfigError(f"an expert named {expert.name!r} is already registered")
        self._experts[expert.name] = expert
        return expert

    def unregister(self, name: str) -> Expert:
        return self._experts.pop(name)

    @property
    def names(self) -> list[str]:
        return list(self._experts)

    def __getitem__(self, name: str) -> Expert:
        return self._experts[name]

    def __contains__(self, name: object) -> bool:
        return name in self._experts

    def __iter__(self) -> Iterator[Expert]:
        return iter(self._experts.values())

    def __len__(self) -> int:
        return len(self._experts)

    def label_spaces(self) -> list[LabelSpace]:
        """What the registered experts can check, in registration order (the claim extractor's nouns)."""
        return [e.label_space() for e in self._experts.values()]

    def experts_for(self, claim: Claim) -> list[Expert]:
        """The experts that cover the claim (possibly none, possibly several)."""
        return [e for e in self._experts.values() if e.covers(claim)]

    def verify(self, image: Any, claims: Sequence[Claim]) -> list[ExpertVerdict]:
        """Every covering expert's verdict on every claim, in claim order then registration order."""
        return self.verify_many([(image, claims)])[0]

    def verify_many(self, items: Sequence[tuple[Any, Sequence[Claim]]]) -> list[list[ExpertVerdict]]:
        """:meth:`verify` for several images; experts that batch (open vocabulary) get them together."""
        items = [(as_rgb(image), list(claims)) for image, claims in items]
        per_expert = {e.name: e.verify_many(items) for e in self._experts.values()}
        order = {name: i for i, name in enumerate(self._experts)}
        out = []
        for index, (_, claims) in enumerate(items):
            position = {c.id: i for i, c in enumerate(claims)}
            verdicts = [v for name in self._experts for v in per_expert[name][index]]
            verdicts.sort(key=lambda v: (position.get(v.claim_id, len(position)), order[v.expert]))
            out.append(verdicts)
        return out

    def __repr__(self) -> str:
        return f"ExpertRegistry({self.names})"


def _settings(settings: Any) -> ExpertsSettings:
    if settings is None:
        return ExpertsSettings()
    if isinstance(settings, ExpertsSettings):
        return settings
    if isinstance(settings, Mapping):  # e.g. IterationSpec.experts
        return ExpertsSettings.model_validate(dict(settings))
    nested = getattr(settings, "experts", None)  # a Settings object with an experts block
    if nested is not None:
        return _settings(nested)
    raise ConfigError(f"cannot read expert settings from {type(settings).__name__}")


def default_registry(settings: ExpertsSettings | Mapping[str, Any] | Any = None) -> ExpertRegistry:
    """The configured experts: colour/shape and OCR by default; OpenCV (faces, cats, people)
    and open-vocabulary detection (OWLv2) when enabled. ``settings`` is an
    :class:`ExpertsSettings`, a dict of the same shape (an Iteration's ``experts`` block),
    an object with an ``experts`` attribute, or None for the defaults."""
    cfg = _settings(settings)

    def colour_shape() -> Expert:
        from vlgenrm.experts.colour_shape import ColourShapeExpert

        return ColourShapeExpert(cfg.colour_shape)

    def ocr() -> Expert:
        from vlgenrm.experts.ocr import OCRExpert

        return OCRExpert(cfg.ocr)

    def opencv() -> Expert:
        from vlgenrm.experts.opencv import OpenCVExpert

        return OpenCVExpert(cfg.opencv)

    def open_vocab() -> Expert:
        from vlgenrm.experts.open_vocab import OpenVocabExpert

        return OpenVocabExpert(cfg.open_vocab)

    factories: list[tuple[bool, Callable[[], Expert]]] = [
        (cfg.colour_shape.enabled, colour_shape),
        (cfg.ocr.enabled, ocr),
        (cfg.opencv.enabled, opencv),
        (cfg.open_vocab.enabled, open_vocab),
    ]
    return ExpertRegistry(factory() for enabled, factory in factories if enabled)

"""The vision-expert interface (§3.1, §5): claims in, verdicts out.

An :class:`Expert` declares the claim types and labels it covers, runs its detector **once**
per image and checks every covered claim against that one set of :class:`Detection` s.
Several experts may cover the same claim; the registry returns all their verdicts and the
voting happens downstream.

The experts' typed configuration lives in :mod:`vlgenrm.experts.config`; this module imports
neither OpenCV nor torch either (the experts import their heavy dependencies themselves).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vlgenrm.contracts import Claim, ClaimType, Evidence, ExpertVerdict, VerdictLabel
from vlgenrm.errors import PermanentError
from vlgenrm.experts.vocabulary import COLOUR_TERMS, LabelSpace

Box = tuple[float, float, float, float]

#: Claim types a detector of objects can check (presence and number of a label).
PRESENCE_TYPES: frozenset[ClaimType] = frozenset({ClaimType.EXISTENCE, ClaimType.COUNT, ClaimType.NEGATED_EXISTENCE})


class InvalidImageError(PermanentError):
    """The image is not an RGB (or grey / RGBA) uint8 array."""


class Detection(BaseModel):
    """One thing a detector found: a label, a box, a score and optional attributes/text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = Field(description="Normalised label, e.g. 'circle', 'face', 'text'.")
    box: Box = Field(description="x0, y0, x1, y1 in pixels of the input image.")
    score: float = Field(ge=0.0, le=1.0, description="Probability that label and attributes are right.")
    attributes: dict[str, str] = Field(default_factory=dict, description="E.g. {'colour': 'red'}.")
    alternatives: dict[str, str] = Field(default_factory=dict, description="Runner-up reading of a marginal detection: 'label' and/or attribute names.")
    text: str | None = Field(None, description="Recognised text (OCR).")
    source: str | None = Field(None, description="Engine that produced it, when an expert has several.")

    @property
    def marginal(self) -> bool:
        """A detection whose reading could plausibly be its runner-up."""
        return bool(self.alternatives)

    def readings(self) -> list[tuple[str, dict[str, str]]]:
        """(label, attributes) as read first, then every mix with runner-up values substituted."""
        keys = sorted(self.alternatives)
        out = []
        for mask in range(1 << len(keys)):
            chosen = {k: self.alternatives[k] for i, k in enumerate(keys) if mask >> i & 1}
            attrs = dict(self.attributes)
            attrs.update({k: v for k, v in chosen.items() if k != "label"})
            out.append((chosen.get("label", self.label), attrs))
        return out

    def to_evidence(self) -> Evidence:
        """'red circle', 'face (haar:face)', 'text (tesseract)' with score, box and text."""
        label = f"{self.attributes['colour']} {self.label}" if self.attributes.get("colour") else self.label
        if self.source:
            label += f" ({self.source})"
        return Evidence(label=label, score=round(float(self.score), 4), box=tuple(round(float(v), 1) for v in self.box), text=self.text)


# -- helpers shared by the experts -----------------------------------------------------------
def as_rgb(image: Any) -> np.ndarray:
    """An H x W x 3 uint8 RGB array from an RGB / RGBA / grey array or a PIL image."""
    if not isinstance(image, np.ndarray):
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - pillow ships with the ml extra
            Image = None  # type: ignore[assignment]
        if Image is not None and isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        else:
            raise InvalidImageError(f"expected an RGB numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidImageError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidImageError(f"expected an H x W x 3 image, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


def normalise_label(word: str, aliases: Mapping[str, str] | None = None, known: Iterable[str] | None = None) -> str:
    """Lower-case, single-spaced; aliases applied; a plain plural folded onto a known label."""
    w = " ".join(str(word).lower().split())
    aliases = aliases or {}
    if w in aliases:
        return aliases[w]
    if known is not None:
        known = set(known)
        if w not in known:
            for stem in (w[:-1] if w.endswith("s") else None, w[:-2] if w.endswith("es") else None):
                if stem and stem in known:
                    return stem
                if stem and stem in aliases:
                    return aliases[stem]
    return w


def normalise_colour(word: str | None) -> str | None:
    """A canonical colour name (``vocabulary.COLOUR_TERMS``, synonyms folded: 'crimson' ->
    'red'), or None when the word is not a colour. Experts check it against what they can see."""
    if word is None:
        return None
    return COLOUR_TERMS.get(" ".join(word.lower().split()))


def presence_verdict(claim: Claim, found: int) -> VerdictLabel:
    """The verdict on an existence / attribute / count / negated-existence claim given how
    many matching objects were found."""
    if claim.type in (ClaimType.EXISTENCE, ClaimType.ATTRIBUTE):
        return VerdictLabel.SUPPORTED if found >= 1 else VerdictLabel.CONTRADICTED
    if claim.type is ClaimType.NEGATED_EXISTENCE:
        return VerdictLabel.SUPPORTED if found == 0 else VerdictLabel.CONTRADICTED
    if claim.type is ClaimType.COUNT:
        return VerdictLabel.SUPPORTED if found == claim.count else VerdictLabel.CONTRADICTED
    raise ValueError(f"{claim.type} is not a presence claim")


def clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return float(min(hi, max(lo, x)))


# -- the interface ---------------------------------------------------------------------------
class Expert(ABC):
    """A vision expert. Subclasses set ``name``, ``claim_types`` and ``labels`` and implement
    :meth:`detect` (one pass over an image) and :meth:`judge` (one claim against detections)."""

    name: str = "expert"
    claim_types: frozenset[ClaimType] = frozenset()
    #: Subjects this expert can check; None = any subject.
    labels: frozenset[str] | None = None
    #: Subject words mapped onto a label (e.g. 'people' -> 'person').
    aliases: Mapping[str, str] = {}
    #: Whether :meth:`detect` looks at the claims (open-vocabulary queries); if not, an image's
    #: detections depend on its pixels alone and one pass serves every pair that shows it.
    uses_claims: bool = False
    #: Detection passes remembered (least recently used dropped): later iterations, seeds and
    #: arms verify the same images again, and a pass (OCR above all) costs far more than a lookup.
    memo_size: int = 4096

    def label_space(self) -> LabelSpace:
        """What this expert can check, for the claim extractor: labels (None = any object noun),
        aliases and claim types (:mod:`vlgenrm.experts.vocabulary`)."""
        return LabelSpace(name=self.name, labels=self.labels, aliases=dict(self.aliases), claim_types=frozenset(self.claim_types))

    def subject_label(self, claim: Claim) -> str:
        """The claim's subject as one of this expert's labels (aliases, plurals folded)."""
        return normalise_label(claim.subject, self.aliases, self.labels)

    def covers(self, claim: Claim) -> bool:
        """Whether this expert can say something about the claim."""
        if claim.type not in self.claim_types:
            return False
        if claim.type is ClaimType.TEXT:
            return True
        return self.labels is None or self.subject_label(claim) in self.labels

    @abstractmethod
    def detect(self, image: np.ndarray, claims: Sequence[Claim]) -> list[Detection] | None:
        """One detection pass over an RGB image; ``claims`` are the covered claims (experts
        whose queries depend on them, e.g. open-vocabulary detection, use them). None means
        the expert cannot judge this image at all (e.g. not of its domain)."""

    def detect_many(self, images: Sequence[np.ndarray], claims: Sequence[Sequence[Claim]]) -> list[list[Detection] | None]:
        """Detections for several images; experts that batch override this."""
        return [self.detect(image, cs) for image, cs in zip(images, claims, strict=True)]

    @abstractmethod
    def judge(self, claim: Claim, detections: Sequence[Detection]) -> ExpertVerdict:
        """The verdict on one covered claim given the image's detections."""

    def verify(self, image: Any, claims: Sequence[Claim]) -> list[ExpertVerdict]:
        """One verdict per covered claim (in order); one detection pass for all of them."""
        return self.verify_many([(image, claims)])[0]

    def verify_many(self, items: Sequence[tuple[Any, Sequence[Claim]]]) -> list[list[ExpertVerdict]]:
        """:meth:`verify` over several images; images without covered claims are not looked at."""
        covered = [[c for c in claims if self.covers(c)] for _, claims in items]
        todo = [i for i, cs in enumerate(covered) if cs]
        detections = self._detect_memoised([as_rgb(items[i][0]) for i in todo], [covered[i] for i in todo]) if todo else []
        out: list[list[ExpertVerdict]] = [[] for _ in items]
        for i, dets in zip(todo, detections, strict=True):
            if dets is None:
                out[i] = [self.verdict(c, VerdictLabel.UNVERIFIABLE, 0.0) for c in covered[i]]
            else:
                out[i] = [self.judge(c, dets) for c in covered[i]]
        return out

    def _detect_memoised(self, images: Sequence[np.ndarray], claims: Sequence[Sequence[Claim]]) -> list[list[Detection] | None]:
        """:meth:`detect_many` for the images not seen before (with the same claims, where they matter)."""
        memo: OrderedDict[Hashable, list[Detection] | None] = self.__dict__.setdefault("_memo", OrderedDict())
        keys = [self._memo_key(image, cs) for image, cs in zip(images, claims, strict=True)]
        missing = [i for i, key in enumerate(keys) if key not in memo]
        # The same image twice in one batch is detected once too.
        first = list({keys[i]: i for i in reversed(missing)}.values())
        found = dict(zip((keys[i] for i in first), self.detect_many([images[i] for i in first], [claims[i] for i in first]), strict=True)) if first else {}
        out = []
        for key in keys:
            dets = found[key] if key in found else memo[key]
            memo[key] = dets
            memo.move_to_end(key)
            out.append(None if dets is None else list(dets))
        while len(memo) > self.memo_size:
            memo.popitem(last=False)
        return out

    def _memo_key(self, image: np.ndarray, claims: Sequence[Claim]) -> Hashable:
        pixels = hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()
        if not self.uses_claims:
            return image.shape, pixels
        return image.shape, pixels, tuple((c.type, c.subject, c.count, c.attribute, c.text) for c in claims)

    def verdict(self, claim: Claim, label: VerdictLabel, confidence: float, evidence: Iterable[Detection | Evidence] = ()) -> ExpertVerdict:
        ev = [e.to_evidence() if isinstance(e, Detection) else e for e in evidence]
        return ExpertVerdict(claim_id=claim.id, expert=self.name, verdict=label, confidence=round(clamp(confidence), 4), evidence=ev)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

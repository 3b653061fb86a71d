"""OpenCV 4 detectors for photos: frontal human faces, cat faces and standing people.

* faces: Haar cascade ``haarcascade_frontalface_default`` on the equalised grey image;
* cat faces: ``haarcascade_frontalcatface`` (label ``cat``);
* people: HOG with OpenCV's default people SVM (upright, full-body, ≥ 64 × 128 px), plus
  every detected face that no body box contains — a visible face is a visible person.

Scores. A Haar detection kept with ``n`` overlapping raw hits scores
``1 − 0.5^(1 + n / min_neighbors)`` (0.75 at the minimum support, → 1 with more); a HOG
detection with SVM margin ``w`` scores ``sigmoid(2w)``.

Confidence rule. Finding an object is good evidence: *supported* existence (and
*contradicted* negation) gets the best matching score, capped at ``present_confidence``.
Not finding one is weak evidence: these detectors only see frontal, upright, unoccluded,
large-enough faces and full standing bodies, and miss profiles, small, rotated or partly
hidden ones, so *contradicted* existence (and *supported* negation) gets
``absent_confidence`` (0.4). Counting with them is unreliable both ways (misses, duplicate
or spurious hits), so count verdicts get ``count_confidence`` (0.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vlgenrm.contracts import Claim, ClaimType, ExpertVerdict
from vlgenrm.experts.base import PRESENCE_TYPES, Detection, Expert, presence_verdict
from vlgenrm.experts.config import OpenCVConfig

FACE_CASCADE = "haarcascade_frontalface_default.xml"
CAT_CASCADE = "haarcascade_frontalcatface.xml"

ALIASES: dict[str, str] = {
    "people": "person", "persons": "person", "human": "person", "humans": "person", "man": "person", "men": "person",
    "woman": "person", "women": "person", "child": "person", "children": "person", "boy": "person", "girl": "person",
    "pedestrian": "person", "faces": "face", "human face": "face", "cats": "cat", "kitten": "cat", "cat face": "cat",
}  # fmt: skip


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"OpenCV could not load {path} (opencv-python-headless < 5 ships it)")
    return cascade


def nms(boxes: list[tuple[float, float, float, float]], scores: list[float], iou: float) -> list[int]:
    """Indices kept by non-maximum suppression (boxes x0, y0, x1, y1)."""
    if not boxes:
        return []
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    keep = cv2.dnn.NMSBoxes(xywh, [float(s) for s in scores], 0.0, float(iou))
    return sorted(int(i) for i in np.asarray(keep).reshape(-1))


def _contains(outer: tuple[float, ...], inner: tuple[float, ...]) -> bool:
    cx, cy = (inner[0] + inner[2]) / 2, (inner[1] + inner[3]) / 2
    return outer[0] <= cx <= outer[2] and outer[1] <= cy <= outer[3]


class OpenCVExpert(Expert):
    """Existence, count and negated-existence of faces, people and cats."""

    name = "opencv"
    claim_types = PRESENCE_TYPES
    uses_claims = True  # runs only the detectors the claims' subjects need
    aliases = ALIASES

    def __init__(self, config: OpenCVConfig | None = None) -> None:
        self.config = config or OpenCVConfig()
        labels = set()
        if self.config.faces:
            labels |= {"face", "person"}
        if self.config.people:
            labels.add("person")
        if self.config.cat_faces:
            labels.add("cat")
        self.labels = frozenset(labels)
        self._face = _cascade(FACE_CASCADE) if self.config.faces else None
        self._cat = _cascade(CAT_CASCADE) if self.config.cat_faces else None
        self._hog = None
        if self.config.people:
            self._hog = cv2.HOGDescriptor()
            self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def covers(self, claim: Claim) -> bool:
        # These detectors cannot check attributes ("a smiling face", "a red cat").
        return super().covers(claim) and claim.attribute is None

    # -- detection -------------------------------------------------------------------------
    def _haar(self, cascade: cv2.CascadeClassifier, grey: np.ndarray, label: str, scale: float) -> list[Detection]:
        cfg = self.config
        rects, hits = cascade.detectMultiScale2(grey, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors, minSize=(cfg.min_face, cfg.min_face))
        out = []
        for (x, y, w, h), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(hits).reshape(-1), strict=True):
            score = 1.0 - 0.5 ** (1.0 + float(n) / cfg.min_neighbors)
            box = (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
            out.append(Detection(label=label, box=tuple(float(v) for v in box), score=round(score, 4), source=f"haar:{label}"))
        return self._nms(out)

    def _people(self, rgb: np.ndarray, scale: float) -> list[Detection]:
        assert self._hog is not None
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        rects, weights = self._hog.detectMultiScale(bgr, hitThreshold=self.config.hog_threshold, winStride=(8, 8), padding=(8, 8), scale=1.05)
        out = []
        for (x, y, w, h), wt in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True):
            score = 1.0 / (1.0 + math.exp(-2.0 * float(wt)))
            box = (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
            out.append(Detection(label="person", box=tuple(float(v) for v in box), score=round(score, 4), source="hog"))
        return self._nms(out)

    def _nms(self, dets: list[Detection]) -> list[Detection]:
        keep = nms([d.box for d in dets], [d.score for d in dets], self.config.nms_iou)
        return [dets[i] for i in keep]

    def detect(self, image: np.ndarray, claims: Sequence[Claim] = ()) -> list[Detection]:
        """Runs only the detectors the claims need (all of them when no claims are given)."""
        wanted = {self.subject_label(c) for c in claims} if claims else set(self.labels or ())
        h, w = image.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        rgb = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else image
        grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        out: list[Detection] = []
        faces: list[Detection] = []
        if self._face is not None and wanted & {"face", "person"}:
            faces = self._haar(self._face, grey, "face", scale)
            out += faces
        if self._cat is not None and "cat" in wanted:
            out += self._haar(self._cat, grey, "cat", scale)
        if "person" in wanted:
            bodies = self._people(rgb, scale) if self._hog is not None else []
            out += bodies
            out += [Detection(label="person", box=f.box, score=f.score, source="haar:face") for f in faces if not any(_contains(b.box, f.box) for b in bodies)]
        return out

    # -- verdicts --------------------------------------------------------------------------
    def judge(self, claim: Claim, detections: Sequence[Detection]) -> ExpertVerdict:
        cfg = self.config
        label = self.subject_label(claim)
        found = [d for d in detections if d.label == label]
        verdict = presence_verdict(claim, len(found))
        if claim.type is ClaimType.COUNT:
            confidence = cfg.count_confidence
        elif found:  # existence supported, or negation contradicted
            confidence = min(cfg.present_confidence, max(d.score for d in found))
        else:  # nothing found: weak evidence of absence
            confidence = cfg.absent_confidence
        return self.verdict(claim, verdict, confidence, found)

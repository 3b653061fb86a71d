"""The OCR expert: TEXT claims ("the sign says STOP") against the text the image shows.

Engines: rapidocr (PP-OCR ONNX models bundled with the package, offline) and, where its
binary is installed, tesseract (called through ``subprocess``; ``pytesseract`` is not
needed) as a second voter.

Comparison is case-insensitive and tolerant of whitespace and punctuation, and folds the
classic OCR confusions (0/O, 1/I/|, 5/S, 8/B) on both sides. A claim is

* **supported** when an engine read the asserted text (inside one line, or across lines in
  reading order); confidence = that reading's engine score (capped at ``confidence``);
  two engines that both read it combine as a noisy-OR;
* **contradicted** when text was read but none of it is the asserted text; each engine's
  confidence is ``score × (1 − similarity)`` where similarity is ``1 − edit distance /
  length`` between the asserted text and the closest line read — a near miss ("STOPP" for
  "STOP") is more likely a misreading than a contradiction; engines combine as a noisy-OR;
* **contradicted** with ``absent_confidence`` when nothing readable was found at all: a
  claim that the image says something implies there is text, exactly as "there is a sign"
  does (engines can miss text, hence the moderate confidence);
* **unverifiable** (confidence 0) when the claim asserts no text to look for.

Existence claims about text itself ("there is a sign", "no text is visible", subject
``text``/``sign``) are judged on whether anything was read: each engine votes "present" with
its best reading's score or "absent" with ``absent_confidence`` (0.7); the side with the
larger (weighted) sum wins, with confidence = its best vote × its share of the votes.

tesseract (page segmentation mode 11, sparse text) reads shape outlines as letters ("A",
"*&") more often than rapidocr, so single-glyph readings are ignored (``min_chars``) and its
votes *against* a claim are scaled by ``tesseract_weight`` (0.5).

An exact reading beats a non-reading: if any engine supports the claim, the verdict is
supported (OCR engines miss or garble text far more often than they invent a specific word).
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import shutil
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlgenrm.contracts import Claim, ClaimType, ExpertVerdict, VerdictLabel
from vlgenrm.experts.base import Detection, Expert, clamp, presence_verdict
from vlgenrm.experts.config import OCRConfig

log = logging.getLogger(__name__)

#: The subject of claims about text itself (the claim extractor's ``TEXT_SUBJECT``).
TEXT_LABEL = "text"
_CONFUSIONS = str.maketrans({"0": "O", "1": "I", "|": "I", "5": "S", "8": "B"})
_MAX_EVIDENCE = 20


def canonical_text(text: str) -> str:
    """Upper case, letters and digits only, OCR confusions folded: 'St0p !' -> 'STOP'."""
    return "".join(ch for ch in text.upper() if ch.isalnum() or ch == "|").translate(_CONFUSIONS)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def similarity(a: str, b: str) -> float:
    """1 - edit distance / longer length: 1 for equal strings, 0 for nothing in common."""
    return 1.0 - edit_distance(a, b) / max(len(a), len(b), 1)


def _noisy_or(values: Sequence[float]) -> float:
    out = 1.0
    for v in values:
        out *= 1.0 - v
    return 1.0 - out


_rapid_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _rapidocr_engine(threads: int) -> Any:
    """One RapidOCR per process and thread setting: creating one loads three ONNX models."""
    from rapidocr import RapidOCR

    params: dict[str, Any] = {"Global.log_level": "error"}
    if threads:
        params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
    engine = RapidOCR(params=params)
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    return engine


def tesseract_available(cmd: str = "tesseract") -> bool:
    return shutil.which(cmd) is not None


class OCRExpert(Expert):
    """Checks TEXT claims with rapidocr and, where installed, tesseract."""

    name = "ocr"
    claim_types = frozenset({ClaimType.TEXT, ClaimType.EXISTENCE, ClaimType.NEGATED_EXISTENCE})
    #: Existence / negation claims about text itself ("there is a sign", "no text is visible").
    labels = frozenset({TEXT_LABEL})
    aliases = {
        w: TEXT_LABEL
        for w in (
            "sign",
            "signs",
            "texts",
            "writing",
            "word",
            "words",
            "label",
            "labels",
            "caption",
            "lettering",
            "heading",
            "headline",
            "title",
            "inscription",
            "letters",
            "slogan",
        )
    }

    def __init__(self, config: OCRConfig | None = None) -> None:
        self.config = config or OCRConfig()
        self.engines = [e for e in dict.fromkeys(self.config.engines) if e != "tesseract" or tesseract_available(self.config.tesseract_cmd)]
        if "tesseract" in self.config.engines and "tesseract" not in self.engines:
            log.info("tesseract binary %r not found: OCR votes with %s only", self.config.tesseract_cmd, self.engines)

    def covers(self, claim: Claim) -> bool:
        return super().covers(claim) and (claim.type is ClaimType.TEXT or claim.attribute is None)

    # -- engines ---------------------------------------------------------------------------
    def read_rapidocr(self, image: np.ndarray) -> list[Detection]:
        engine = _rapidocr_engine(self.config.threads)
        with _rapid_lock:  # one inference at a time per process: onnxruntime uses all cores anyway
            result = engine(np.ascontiguousarray(image[:, :, ::-1]))  # rapidocr takes arrays as BGR
        if result is None or result.txts is None or result.boxes is None:
            return []
        out = []
        for text, score, quad in zip(result.txts, result.scores, result.boxes, strict=True):
            if float(score) < self.config.min_score or not str(text).strip():
                continue
            quad = np.asarray(quad, dtype=np.float64)
            box = (float(quad[:, 0].min()), float(quad[:, 1].min()), float(quad[:, 0].max()), float(quad[:, 1].max()))
            out.append(Detection(label="text", box=box, score=clamp(float(score)), text=str(text).strip(), source="rapidocr"))
        return out

    def read_tesseract(self, image: np.ndarray) -> list[Detection]:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        cmd = [self.config.tesseract_cmd, "stdin", "stdout", "--psm", str(self.config.tesseract_psm), "tsv"]
        try:
            proc = subprocess.run(cmd, input=buf.getvalue(), capture_output=True, timeout=self.config.tesseract_timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("tesseract failed (%s): OCR votes without it for this image", exc)
            return []
        if proc.returncode != 0:
            log.warning("tesseract exited with %d: %s", proc.returncode, proc.stderr.decode(errors="replace")[-300:])
            return []
        return self._parse_tsv(proc.stdout.decode("utf-8", errors="replace"))

    def _parse_tsv(self, tsv: str) -> list[Detection]:
        """Words of tesseract's TSV grouped into lines (block, paragraph, line)."""
        lines: dict[tuple[str, str, str], list[dict[str, str]]] = {}
        for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
            if row.get("level") != "5" or not (row.get("text") or "").strip():
                continue
            try:
                if float(row["conf"]) < 0:
                    continue
            except (KeyError, ValueError):
                continue
            lines.setdefault((row["block_num"], row["par_num"], row["line_num"]), []).append(row)
        out = []
        for words in lines.values():
            score = float(np.mean([float(w["conf"]) for w in words])) / 100.0
            if score < self.config.min_score:
                continue
            x0 = min(int(w["left"]) for w in words)
            y0 = min(int(w["top"]) for w in words)
            x1 = max(int(w["left"]) + int(w["width"]) for w in words)
            y1 = max(int(w["top"]) + int(w["height"]) for w in words)
            text = " ".join(w["text"].strip() for w in words)
            out.append(Detection(label="text", box=(float(x0), float(y0), float(x1), float(y1)), score=clamp(score), text=text, source="tesseract"))
        return out

    def detect(self, image: np.ndarray, claims: Sequence[Claim] = ()) -> list[Detection]:
        return self.detect_many([image], [claims])[0]

    def detect_many(self, images: Sequence[np.ndarray], claims: Sequence[Sequence[Claim]]) -> list[list[Detection] | None]:
        """Both engines over every image, tesseract's processes running while rapidocr reads
        in this one (they overlap on a second core); detections in engine order, as one by one."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as pool:
            tesseract = [pool.submit(self.read_tesseract, image) for image in images] if "tesseract" in self.engines else []
            rapid = [self.read_rapidocr(image) for image in images] if "rapidocr" in self.engines else []
            read = {"rapidocr": rapid, "tesseract": [f.result() for f in tesseract]}
        return [[d for engine in self.engines for d in read[engine][i]] for i in range(len(images))]

    # -- verdicts --------------------------------------------------------------------------
    def weight(self, engine: str | None) -> float:
        """How much an engine's readings count against a claim (tesseract: ``tesseract_weight``)."""
        return self.config.tesseract_weight if engine == "tesseract" else 1.0

    def judge(self, claim: Claim, detections: Sequence[Detection]) -> ExpertVerdict:
        readings = [d for d in detections if len(canonical_text(d.text or "")) >= self.config.min_chars]
        if claim.type is ClaimType.TEXT:
            return self._judge_text(claim, readings)
        return self._judge_presence(claim, readings)

    def _judge_presence(self, claim: Claim, readings: list[Detection]) -> ExpertVerdict:
        """'There is a sign' / 'no text is visible': did the engines read anything? Each engine
        votes 'present' (its best reading's score) or 'absent' (``absent_confidence``), scaled by
        its weight; the larger sum wins, with confidence = the winners' best vote x their share."""
        cap = self.config.confidence
        votes: dict[bool, list[float]] = {True: [], False: []}
        for engine in self.engines:
            mine = [d.score for d in readings if d.source == engine]
            present = bool(mine)
            votes[present].append((min(cap, max(mine)) if present else self.config.absent_confidence) * self.weight(engine))
        present = sum(votes[True]) > sum(votes[False]) if votes[True] or votes[False] else bool(readings)
        total = sum(votes[True]) + sum(votes[False])
        confidence = max(votes[present]) * sum(votes[present]) / total if total > 0 else 0.0
        verdict = presence_verdict(claim, 1 if present else 0)
        return self.verdict(claim, verdict, min(cap, confidence), readings[:_MAX_EVIDENCE] if present else [])

    def _judge_text(self, claim: Claim, readings: list[Detection]) -> ExpertVerdict:
        cap = self.config.confidence
        target = canonical_text(claim.text or "")
        if not target:
            return self.verdict(claim, VerdictLabel.UNVERIFIABLE, 0.0)
        if not readings:
            return self.verdict(claim, VerdictLabel.CONTRADICTED, min(cap, self.config.absent_confidence))
        support: list[float] = []
        against: list[float] = []
        support_evidence: list[Detection] = []
        for engine in dict.fromkeys(d.source for d in readings):
            lines = sorted((d for d in readings if d.source == engine), key=lambda d: (round(d.box[1] / 10), d.box[0]))
            hits = [d for d in lines if target in canonical_text(d.text or "")]
            if hits:
                best = max(hits, key=lambda d: d.score)
                support.append(min(cap, best.score))
                support_evidence.append(best)
                continue
            if target in "".join(canonical_text(d.text or "") for d in lines):  # across lines, reading order
                support.append(min(cap, min(d.score for d in lines)))
                support_evidence += lines
                continue
            closest = max(lines, key=lambda d: similarity(target, canonical_text(d.text or "")))
            against.append(min(cap, closest.score) * (1.0 - similarity(target, canonical_text(closest.text or ""))) * self.weight(engine))
        if support:
            return self.verdict(claim, VerdictLabel.SUPPORTED, min(cap, _noisy_or(support)), support_evidence[:_MAX_EVIDENCE])
        return self.verdict(claim, VerdictLabel.CONTRADICTED, min(cap, _noisy_or(against)), readings[:_MAX_EVIDENCE])

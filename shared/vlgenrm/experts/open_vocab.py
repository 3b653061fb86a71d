"""Open-vocabulary detection with OWLv2 (or OWL-ViT) through transformers.

For each image the expert builds one text query per distinct (subject, colour) of its
claims — ``query_template.format("red car")`` — runs the detector on a batch of images with
their queries (padded to the batch's longest query list), and converts each query's logits
into boxes with the processor's own post-processing (``post_process_grounded_object_detection``),
**one query at a time**: a box counts for every query whose score clears ``threshold``, so
"a car" and "a red car" do not compete for the same box, and an image's detections do not
depend on which other images (and queries) share its batch. Boxes of one query are merged
by non-maximum suppression (``nms_iou``) before counting.

Image preprocessing follows the checkpoint's image processor (rescale, pad to a square
bottom/right, anti-aliased resize, normalise). transformers implements the resize with
scipy; where scipy is missing (``image_backend: auto``) the same steps run with OpenCV and numpy
(Gaussian anti-aliasing with sigma ``(factor − 1) / 2``, separable linear interpolation with
mirrored edges), which matches it to float round-off (tested where scipy is installed).

Confidence: a detection scoring ``s`` makes a *supported* existence (or a *contradicted*
negation) ``min(present_confidence, 0.5 + s / 2)`` — any score past the threshold is taken
as more likely than not, stronger scores approach the cap; not finding the object gives
``absent_confidence`` (an open-vocabulary detector misses small, occluded or unusually
phrased objects); counts get ``count_confidence``. Random or untrained weights give
meaningless verdicts: the tests only prove the code path.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlgenrm.contracts import Claim, ClaimType, ExpertVerdict
from vlgenrm.errors import ConfigError
from vlgenrm.experts.base import Detection, Expert, normalise_colour, presence_verdict
from vlgenrm.experts.config import OpenVocabConfig

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("owlv2", "owlvit")
#: Filler query for images with fewer queries than the longest in their batch.
PAD_QUERY = " "


def _scipy_available() -> bool:
    return importlib.util.find_spec("scipy") is not None


def _linear_resize(img: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear interpolation along one axis on pixel centres, mirrored at the edges: what
    scipy.ndimage.zoom(order=1, mode="mirror", grid_mode=True) computes."""
    n = img.shape[axis]
    if n == size:
        return img
    x = (np.arange(size, dtype=np.float64) + 0.5) * (n / size) - 0.5
    if n > 1:
        period = 2 * (n - 1)
        x = np.abs(np.mod(x, period))
        x = np.where(x > n - 1, period - x, x)
    else:
        x = np.zeros_like(x)
    i0 = np.clip(np.floor(x).astype(np.int64), 0, n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    frac = (x - i0).astype(np.float32)
    shape = [1] * img.ndim
    shape[axis] = size
    frac = frac.reshape(shape)
    return np.take(img, i0, axis=axis) * (1 - frac) + np.take(img, i1, axis=axis) * frac


def owl_pixel_values(images: Sequence[np.ndarray], image_processor: Any) -> np.ndarray:
    """The OWLv2 image processor's steps with OpenCV instead of scipy: rescale, pad to a
    square (bottom/right, zeros), anti-aliased bilinear resize, normalise. (B, 3, H, W) float32."""
    import cv2

    size = image_processor.size
    out_h, out_w = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
    rescale = float(image_processor.rescale_factor) if image_processor.do_rescale else 1.0
    mean = np.asarray(image_processor.image_mean, dtype=np.float32)
    std = np.asarray(image_processor.image_std, dtype=np.float32)
    batch = []
    for image in images:
        img = image.astype(np.float32) * rescale
        h, w = img.shape[:2]
        if getattr(image_processor, "do_pad", True):
            side = max(h, w)
            padded = np.zeros((side, side, 3), np.float32)
            padded[:h, :w] = img
            img = padded
            h = w = side
        lo, hi = float(img.min()), float(img.max())
        fy, fx = h / out_h, w / out_w
        sy, sx = max(0.0, (fy - 1) / 2), max(0.0, (fx - 1) / 2)
        if sx > 0 or sy > 0:
            # scipy's gaussian_filter(mode="mirror", truncate=4) == cv2 BORDER_REFLECT_101, radius 4 sigma
            kx = 2 * int(4 * sx + 0.5) + 1 if sx > 0 else 1
            ky = 2 * int(4 * sy + 0.5) + 1 if sy > 0 else 1
            img = cv2.GaussianBlur(img, (kx, ky), sigmaX=sx if sx > 0 else 1e-9, sigmaY=sy if sy > 0 else 1e-9, borderType=cv2.BORDER_REFLECT_101)
        img = _linear_resize(_linear_resize(img, out_h, axis=0), out_w, axis=1)
        img = np.clip(img, lo, hi)
        if image_processor.do_normalize:
            img = (img - mean) / std
        batch.append(img.transpose(2, 0, 1))
    return np.stack(batch).astype(np.float32)


class OpenVocabExpert(Expert):
    """Existence, attribute, count and negated-existence claims about any nameable object."""

    name = "open_vocab"
    claim_types = frozenset({ClaimType.EXISTENCE, ClaimType.COUNT, ClaimType.ATTRIBUTE, ClaimType.NEGATED_EXISTENCE})
    uses_claims = True  # its text queries are built from the claims

    def __init__(self, config: OpenVocabConfig | None = None, *, model: Any = None, processor: Any = None) -> None:
        self.config = config or OpenVocabConfig()
        self.labels = frozenset(self.config.labels) if self.config.labels else None
        self.aliases = dict(self.config.aliases)
        self.model, self.processor = model, processor
        if self.model is None or self.processor is None:
            self._load()
        backend = self.config.image_backend
        if backend == "auto":
            backend = "processor" if _scipy_available() else "builtin"
        if backend == "processor" and not _scipy_available():
            raise ConfigError("open_vocab.image_backend=processor needs scipy (transformers' OWLv2 resize uses it); use builtin or auto")
        self.image_backend = backend

    def _load(self) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor
        from transformers.utils import logging as hf_logging

        source = self.config.model
        previous = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # transformers warns about the missing torchvision backend
        try:
            config = AutoConfig.from_pretrained(source)
            if config.model_type not in SUPPORTED_MODEL_TYPES:
                raise ConfigError(f"{source} is a {config.model_type!r} model; open_vocab supports {SUPPORTED_MODEL_TYPES}")
            self.processor = AutoProcessor.from_pretrained(source)
            model = AutoModelForZeroShotObjectDetection.from_pretrained(source, dtype=getattr(torch, self.config.dtype))
        except OSError as exc:
            raise ConfigError(f"cannot load the open-vocabulary detector {source!r}: {exc}") from exc
        finally:
            hf_logging.set_verbosity(previous)
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model.to(device).eval()

    # -- queries ---------------------------------------------------------------------------
    def target(self, claim: Claim) -> tuple[str, str | None]:
        """(label, colour) the claim asks about; non-colour attributes are part of the label."""
        label = self.subject_label(claim)
        if claim.attribute is None:
            return label, None
        colour = normalise_colour(claim.attribute)
        if colour is not None:
            return label, colour
        return f"{' '.join(claim.attribute.lower().split())} {label}", None

    def query(self, target: tuple[str, str | None]) -> str:
        label, colour = target
        return self.config.query_template.format(f"{colour} {label}" if colour else label)

    def targets(self, claims: Sequence[Claim]) -> list[tuple[str, str | None]]:
        return list(dict.fromkeys(self.target(c) for c in claims))

    # -- detection -------------------------------------------------------------------------
    def detect(self, image: np.ndarray, claims: Sequence[Claim]) -> list[Detection]:
        return self.detect_many([image], [claims])[0]

    def detect_many(self, images: Sequence[np.ndarray], claims: Sequence[Sequence[Claim]]) -> list[list[Detection] | None]:
        out: list[list[Detection] | None] = []
        step = self.config.batch_size
        for start in range(0, len(images), step):
            out += self._detect_batch(list(images[start : start + step]), [self.targets(cs) for cs in claims[start : start + step]])
        return out

    def _pixel_values(self, images: list[np.ndarray]) -> Any:
        import torch

        if self.image_backend == "processor":
            from PIL import Image

            pixels = self.processor.image_processor(images=[Image.fromarray(i) for i in images], return_tensors="pt")["pixel_values"]
        else:
            pixels = torch.from_numpy(owl_pixel_values(images, self.processor.image_processor))
        return pixels.to(self.model.device, self.model.dtype)

    def _detect_batch(self, images: list[np.ndarray], targets: list[list[tuple[str, str | None]]]) -> list[list[Detection] | None]:
        import torch

        n_queries = max(1, max(len(t) for t in targets))
        texts = [[self.query(t) for t in ts] + [PAD_QUERY] * (n_queries - len(ts)) for ts in targets]
        flat = [q for qs in texts for q in qs]
        max_len = getattr(self.model.config.text_config, "max_position_embeddings", 16)
        tokens = self.processor.tokenizer(flat, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
        with torch.inference_mode():
            outputs = self.model(
                input_ids=tokens["input_ids"].to(self.model.device),
                attention_mask=tokens["attention_mask"].to(self.model.device),
                pixel_values=self._pixel_values(images),
            )
        logits, boxes = outputs.logits.float(), outputs.pred_boxes.float()
        sizes = [tuple(i.shape[:2]) for i in images]
        results: list[list[Detection] | None] = []
        for b, ts in enumerate(targets):
            dets: list[Detection] = []
            for q, target in enumerate(ts):
                single = type(outputs)(logits=logits[b : b + 1, :, q : q + 1], pred_boxes=boxes[b : b + 1])
                [res] = self.processor.post_process_grounded_object_detection(
                    single, threshold=self.config.threshold, target_sizes=[sizes[b]], text_labels=[[texts[b][q]]]
                )
                dets += self._to_detections(res, target, texts[b][q], sizes[b])
            results.append(dets)
        return results

    def _to_detections(self, res: dict[str, Any], target: tuple[str, str | None], query: str, size: tuple[int, int]) -> list[Detection]:
        from vlgenrm.experts.opencv import nms

        h, w = size
        label, colour = target
        scores = [float(s) for s in res["scores"]]
        raw = [tuple(float(v) for v in b) for b in res["boxes"]]
        boxes = [(min(max(b[0], 0.0), w), min(max(b[1], 0.0), h), min(max(b[2], 0.0), w), min(max(b[3], 0.0), h)) for b in raw]
        attrs = {"query": query, **({"colour": colour} if colour else {})}
        keep = nms(boxes, scores, self.config.nms_iou)
        keep.sort(key=lambda i: -scores[i])
        return [Detection(label=label, box=boxes[i], score=min(1.0, max(0.0, scores[i])), attributes=attrs, source="owl") for i in keep]

    # -- verdicts --------------------------------------------------------------------------
    def judge(self, claim: Claim, detections: Sequence[Detection]) -> ExpertVerdict:
        cfg = self.config
        label, colour = self.target(claim)
        found = [d for d in detections if d.label == label and d.attributes.get("colour") == colour]
        verdict = presence_verdict(claim, len(found))
        if claim.type is ClaimType.COUNT:
            confidence = cfg.count_confidence
        elif found:
            confidence = min(cfg.present_confidence, 0.5 + max(d.score for d in found) / 2)
        else:
            confidence = cfg.absent_confidence
        return self.verdict(claim, verdict, confidence, found)

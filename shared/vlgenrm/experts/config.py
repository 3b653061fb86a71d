"""Configuration of the experts stage (§3.1–§3.2): every expert's settings, claim extraction,
verification and refinement. A leaf module: the Iteration spec, the CRD and the CLI load it
without OpenCV, OCR engines or torch."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from vlgenrm.contracts.base import camel
from vlgenrm.genrm.config import SamplingParams
from vlgenrm.rationale.config import EngineSettings


class _Config(BaseModel):
    model_config = camel(extra="forbid")


class ColourShapeConfig(_Config):
    """The classical colour/shape detector of the synthetic domain (§7)."""

    enabled: bool = Field(True, description="Register this expert.")
    min_area: int = Field(60, ge=1, description="Smaller coloured blobs (pixels) are ignored as noise.")
    min_chroma: int = Field(60, ge=0, le=255, description="max(RGB)-min(RGB) a pixel needs to count as a coloured shape.")
    min_value: int = Field(120, ge=0, le=255, description="max(RGB) a pixel needs (darker pixels are text or outlines).")
    star_solidity: float = Field(0.75, gt=0, lt=1, description="Area/convex-hull area below which a blob is a star.")
    shape_margin: float = Field(0.08, gt=0, description="Fit margin over the runner-up shape that makes a shape reading clear.")
    colour_ratio: float = Field(0.5, gt=0, lt=1, description="Nearest/runner-up colour distance ratio at or below which the colour is clear.")
    max_colour_distance: float = Field(90.0, gt=0, description="RGB distance beyond which a blob's colour is off-palette.")
    min_side: int = Field(12, ge=1, description="Blobs whose box is thinner (pixels) are read as marginal.")
    confidence: float = Field(0.95, gt=0, le=1, description="Confidence of a verdict no marginal detection can change.")


class OCRConfig(_Config):
    """Reading text: rapidocr (bundled ONNX models), plus tesseract where installed."""

    enabled: bool = Field(True, description="Register this expert.")
    engines: list[Literal["rapidocr", "tesseract"]] = Field(
        ["rapidocr", "tesseract"], description="Engines to vote; tesseract is skipped when its binary is missing."
    )
    min_score: float = Field(0.1, ge=0, le=1, description="Recognised text with a lower engine score is ignored (the score also weights its vote).")
    min_chars: int = Field(2, ge=1, description="Readings with fewer letters/digits are ignored (single glyphs are mostly shapes).")
    tesseract_weight: float = Field(0.5, ge=0, le=1, description="Factor on tesseract's contradiction votes (it reads shapes as letters more often).")
    absent_confidence: float = Field(0.7, ge=0, le=1, description="Confidence of 'no text was read' verdicts on text existence claims.")
    tesseract_cmd: str = Field("tesseract", description="The tesseract binary (name on PATH or a path).")
    tesseract_psm: int = Field(11, ge=0, le=13, description="tesseract page segmentation mode (11 = sparse text).")
    tesseract_timeout_s: float = Field(30.0, gt=0, description="Longest one tesseract run may take.")
    confidence: float = Field(0.95, gt=0, le=1, description="Upper bound of any OCR verdict's confidence.")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads for rapidocr (0 = its default).")


class OpenCVConfig(_Config):
    """OpenCV 4 detectors: Haar cascades for faces and cat faces, HOG for people."""

    enabled: bool = Field(False, description="Register this expert.")
    faces: bool = Field(True, description="Detect frontal human faces (haarcascade_frontalface_default).")
    cat_faces: bool = Field(True, description="Detect cat faces (haarcascade_frontalcatface).")
    people: bool = Field(True, description="Detect standing people (HOG + the default people SVM).")
    scale_factor: float = Field(1.1, gt=1.0, description="Haar pyramid step.")
    min_neighbors: int = Field(5, ge=1, description="Haar detections a face needs to be kept.")
    min_face: int = Field(24, ge=8, description="Smallest face side in pixels.")
    max_side: int = Field(1024, ge=64, description="Larger images are downscaled to this side first.")
    hog_threshold: float = Field(0.3, description="HOG SVM margin a person needs to be kept.")
    nms_iou: float = Field(0.4, gt=0, le=1, description="Overlapping detections of a label above this IoU are merged.")
    present_confidence: float = Field(0.9, gt=0, le=1, description="Upper bound of a 'found it' verdict.")
    absent_confidence: float = Field(0.4, gt=0, le=1, description="Confidence of 'not found' verdicts (misses are common).")
    count_confidence: float = Field(0.5, gt=0, le=1, description="Confidence of count verdicts.")


class OpenVocabConfig(_Config):
    """Open-vocabulary detection with OWLv2 through transformers (clusters, GPUs)."""

    enabled: bool = Field(False, description="Register this expert.")
    model: str = Field("google/owlv2-base-patch16-ensemble", description="Checkpoint folder or hub id of an Owlv2ForObjectDetection.")
    device: str = Field("auto", description="cpu, cuda, cuda:N or auto.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights and activations dtype.")
    batch_size: int = Field(4, ge=1, description="Images per forward pass.")
    threshold: float = Field(0.2, ge=0, le=1, description="Detections with a lower score are dropped.")
    nms_iou: float = Field(0.3, gt=0, le=1, description="Overlapping boxes of one label above this IoU are merged.")
    query_template: str = Field("a photo of a {}", description="Text query built from a claim's subject (and colour).")
    labels: list[str] | None = Field(None, description="Subjects this expert covers; None = any subject.")
    aliases: dict[str, str] = Field(
        default_factory=lambda: {"people": "person", "man": "person", "woman": "person", "men": "person", "women": "person", "children": "child"},
        description="Subject words mapped to a query label.",
    )
    image_backend: Literal["auto", "processor", "builtin"] = Field(
        "auto", description="Image preprocessing: the checkpoint's processor (needs scipy), the built-in equivalent, or auto."
    )
    present_confidence: float = Field(0.9, gt=0, le=1, description="Upper bound of a 'found it' verdict.")
    absent_confidence: float = Field(0.5, gt=0, le=1, description="Confidence of 'not found' verdicts.")
    count_confidence: float = Field(0.6, gt=0, le=1, description="Confidence of count verdicts.")


class ExpertsSettings(_Config):
    """Which experts run and how (the ``experts`` block of an Iteration spec)."""

    colour_shape: ColourShapeConfig = Field(default_factory=ColourShapeConfig)
    ocr: OCRConfig = Field(default_factory=OCRConfig)
    opencv: OpenCVConfig = Field(default_factory=OpenCVConfig)
    open_vocab: OpenVocabConfig = Field(default_factory=OpenVocabConfig)


class VerificationSettings(BaseModel):
    """Constants of §3.1."""

    model_config = camel()

    delta: float = Field(0.5, ge=0, description="y_e needs h of one response below the other's by more than this.")


class ConflictPolicy(StrEnum):
    FLIP = "flip"
    DROP = "drop"
    KEEP = "keep"


class RefinementSettings(BaseModel):
    """Constants and policy of §3.2."""

    model_config = camel()

    flip_threshold: float = Field(1.0, ge=0, description="|h(A) - h(B)| needed to override a human label.")
    policy: ConflictPolicy = Field(ConflictPolicy.FLIP, description="What to do when experts and humans disagree.")


class LLMExtractorSettings(BaseModel):
    """The ``llm`` claim extractor: its engine, sampling, batching and retries (``experts.llm``)."""

    model_config = camel()

    engine: EngineSettings = Field(
        default_factory=lambda: EngineSettings(kind="openai"),
        description="The language model: the rationale stage's engine settings (kind transformers, vllm or openai).",
    )
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=0.0, max_new_tokens=512), description="Sampling of the first try (n is always 1; default greedy)."
    )
    batch_size: int = Field(32, ge=1, description="Responses (prompts) per engine call.")
    max_attempts: int = Field(
        3, ge=1, le=10, description="Tries per response; output still malformed after them gives no claims and a counted extraction error."
    )
    retry_temperature: float = Field(0.7, ge=0.0, description="Temperature of the retries (greedy decoding would repeat a malformed answer).")


class AnnotationSettings(BaseModel):
    """Everything the experts stage is configured with (an Iteration's ``spec.experts``)."""

    model_config = camel()

    enabled: bool = Field(
        True, description="Run the vision experts; false = human labels pass through (source=human) and no ExpertReport is written (the no-experts arm)."
    )
    extractor: Literal["lexicon", "llm"] = Field(
        "lexicon",
        description="Claim extraction: lexicon = grammar over the experts' label spaces (CPU default); llm = a language model lists the claims as JSON (recommended on clusters).",
    )
    llm: LLMExtractorSettings = Field(
        default_factory=LLMExtractorSettings, description="The llm extractor's engine, sampling, batching and retries (read with extractor=llm only)."
    )
    experts: ExpertsSettings = Field(default_factory=ExpertsSettings)
    verification: VerificationSettings = Field(default_factory=VerificationSettings)
    refinement: RefinementSettings = Field(default_factory=RefinementSettings)
    batch_size: int = Field(16, ge=1, description="Examples whose images are verified together.")

    @model_validator(mode="after")
    def _llm_has_a_model(self) -> AnnotationSettings:
        if self.extractor != "llm":
            return self
        engine = self.llm.engine
        if engine.kind == "template":
            raise ValueError("experts.extractor=llm needs a language model: set experts.llm.engine.kind to transformers, vllm or openai")
        if not engine.model:
            raise ValueError(f"experts.extractor=llm with engine kind={engine.kind} needs experts.llm.engine.model")
        if engine.kind == "openai" and not engine.base_url:
            raise ValueError("experts.extractor=llm with engine kind=openai needs experts.llm.engine.base_url")
        return self

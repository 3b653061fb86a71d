"""Request and response bodies of the scoring API (what the OpenAPI document shows).

Images travel as one string: an ``s3://bucket/key`` URI of the platform's store, an
``http(s)://`` URL of an allowed host, or base64 (optionally as a ``data:image/...;base64,``
URL).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ImageSource = str
#: A 28x28 red square: the documented example, and what schemathesis sends besides noise.
EXAMPLE_IMAGE = "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAIAAAD9b0jDAAAAKElEQVR42mM8ISfHQG3AxEADMGroqKGjho4aOmroqKGjho4aOvgMBQB+BAE8FfyCFgAAAABJRU5ErkJggg=="


#: Most sampled critiques per response or pair (self-consistency).
MAX_SAMPLES = 32
SAMPLES_DOC = (
    'Self-consistency: sample this many critiques per response (at `temperature`, seeded by `seed`); reward = the mean P("Yes") '
    "after them, agreement = the share of sampled verdicts that agree with the majority. 1 = the greedy path (with_critique) "
    "or direct scoring."
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a request with a misspelt field fails loudly


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a client of an older version reads a newer scorer's answers


class ScoreRequest(_Body):
    """Pointwise rewards for one or more responses to one (image, question)."""

    image: ImageSource = Field(min_length=1, description="s3:// URI, http(s):// URL of an allowed host, or base64 image bytes.", examples=[EXAMPLE_IMAGE])
    question: str = Field(min_length=1, max_length=20_000, examples=["What colour is the square?"])
    responses: list[str] = Field(min_length=1, max_length=64, description="Responses to score independently.", examples=[["It is red.", "It is blue."]])
    with_critique: bool = Field(False, description="Generate a critique first and score the verdict after it (slower).")
    max_critique_tokens: int = Field(256, ge=1, le=2048, description="Longest generated critique, when with_critique or samples > 1.")
    samples: int = Field(1, ge=1, le=MAX_SAMPLES, description=SAMPLES_DOC)
    temperature: float = Field(
        0.7,
        ge=0.05,
        le=2,
        description="Sampling temperature of the critiques when samples > 1 (at least 0.05: lower overflows the logits; samples = 1 is the greedy path).",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the sampled critiques (same request and seed, same answer).")


class ResponseScore(_Answer):
    index: int = Field(ge=0, description="Position of the response in the request.")
    reward: float = Field(ge=0, le=1, description='P("Yes"): the response is accurate and helpful for the image.')
    verdict: str = Field(description="Yes or No, whichever is more likely.")
    critique: str | None = Field(None, description="The generated critique, when asked for (with samples > 1: the first sample's).")
    agreement: float = Field(1.0, ge=0, le=1, description="Fraction of the sampled verdicts that agree with the majority (1 when samples = 1).")
    sample_rewards: list[float] | None = Field(None, description='With samples > 1: P("Yes") after each sampled critique; reward is their mean.')
    critiques: list[str] | None = Field(None, description="With samples > 1 and with_critique: every sampled critique.")


class ScoreResponse(_Answer):
    model: str = Field(description="The served checkpoint (URI or name).")
    model_version: str = Field(description="Digest of the weights that produced these numbers.")
    scores: list[ResponseScore]


class CompareRequest(_Body):
    """Rank two or more responses by pairwise preference (both orders averaged)."""

    image: ImageSource = Field(min_length=1, description="s3:// URI, http(s):// URL of an allowed host, or base64 image bytes.", examples=[EXAMPLE_IMAGE])
    question: str = Field(min_length=1, max_length=20_000, examples=["What colour is the square?"])
    responses: list[str] = Field(
        min_length=2, max_length=16, description="Responses to compare, every pair in both orders.", examples=[["It is red.", "It is blue."]]
    )
    samples: int = Field(1, ge=1, le=MAX_SAMPLES, description="Sampled critiques per pair (self-consistency): p_first is the mean over them; 1 = no critique.")
    max_critique_tokens: int = Field(256, ge=1, le=2048, description="Longest sampled critique, when samples > 1.")
    temperature: float = Field(
        0.7,
        ge=0.05,
        le=2,
        description="Sampling temperature of the critiques when samples > 1 (at least 0.05: lower overflows the logits; samples = 1 is the greedy path).",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the sampled critiques (same request and seed, same answer).")


class PairPreference(_Answer):
    first: int = Field(ge=0)
    second: int = Field(ge=0)
    p_first: float = Field(ge=0, le=1, description="P(first is better), averaged over both presentation orders (and the samples).")
    agreement: float = Field(1.0, ge=0, le=1, description="Fraction of the sampled preferences that agree with the majority (1 when samples = 1).")


class CompareResponse(_Answer):
    model: str
    model_version: str
    ranking: list[int] = Field(description="Response indices, best first.")
    win_rate: list[float] = Field(description="Per response: mean probability of beating each other response.")
    pairs: list[PairPreference]


class RewardRequest(BaseModel):
    """OpenRLHF's remote reward-model request: ``query`` = prompt + response, aligned lists."""

    model_config = ConfigDict(extra="allow")  # OpenRLHF versions add fields; unknown ones are ignored
    query: list[str] = Field(
        min_length=1, max_length=1024, description="Full texts: prompt followed by the response.", examples=[["Q: What colour is it? A: Red."]]
    )
    prompts: list[str] | None = Field(
        None, description="The prompt part of each query; the response is what follows it.", examples=[["Q: What colour is it? A: "]]
    )
    labels: list[Any] | None = Field(
        None,
        description="Passed through by OpenRLHF: the image of each query when `images` is absent (an s3:// URI, a data:image/ URL, or an object with an `image` field).",
    )
    images: list[ImageSource] | None = Field(
        None, description="vlgenrm extension: the image of each query (else taken from labels).", examples=[[EXAMPLE_IMAGE]]
    )


class RewardResponse(BaseModel):
    rewards: list[float] = Field(description='P("Yes") per query.')
    scores: list[float] = Field(description="Same as rewards (OpenRLHF reads either).")
    extra_logs: dict[str, list[float]] = Field(default_factory=dict, description="Per-query numbers OpenRLHF logs (it makes each a tensor).")
    model: str | None = Field(None, description="The served checkpoint (URI or name).")
    model_version: str | None = Field(None, description="Digest of the weights that scored the first query.")
    model_versions: list[str] | None = Field(None, description="Per query: the digest that scored it (they differ only across a hot swap).")


class ModelCard(_Answer):
    id: str
    version: str
    object: str = "model"
    family: str
    loaded_at: float = Field(description="Unix time the weights were loaded.")


class ModelList(_Answer):
    object: str = "list"
    data: list[ModelCard]


class ErrorBody(_Answer):
    code: str = Field(description="Machine-readable reason, e.g. unauthorized, rate_limited, too_large.")
    message: str


class ErrorResponse(_Answer):
    error: ErrorBody

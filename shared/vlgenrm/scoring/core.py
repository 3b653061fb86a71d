"""The scoring core (§3.7) the Ray Serve replicas call: a loaded GenRM with its provenance,
pointwise rewards (optionally after a generated critique), pairwise preferences, rankings.

Batching is by *request*: the Serve replica merges concurrent requests into one call here,
and the GenRM splits the merged items into forward passes of ``genrm.batch_size``. All items
of one request therefore go through one model, so a response names exactly one version even
while the model is being swapped.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from vlgenrm.genrm.config import GenRMSettings, SamplingParams
from vlgenrm.genrm.errors import GenRMInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PointJob:
    """One score request: every response against the same image and question."""

    image: bytes
    question: str
    responses: tuple[str, ...]
    critique_tokens: int | None = None  # generate a critique first when set
    sampling: Sampling | None = None  # self-consistency: sampled critiques instead of one greedy one


@dataclass(frozen=True)
class Sampling:
    """Self-consistency (§3.7): ``n`` critiques sampled per item, the value is the mean after them."""

    n: int
    temperature: float = 0.7
    seed: int = 0
    max_tokens: int = 256


@dataclass(frozen=True)
class PairJob:
    """One compare request: every pair of responses, both orders averaged."""

    image: bytes
    question: str
    responses: tuple[str, ...]
    sampling: Sampling | None = None

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return list(combinations(range(len(self.responses)), 2))


@dataclass
class JobResult:
    """What a job got back: values (or the typed input error that stopped it), with provenance."""

    values: list[float] = field(default_factory=list)
    critiques: list[str] | None = None
    agreement: list[float] | None = None  # per item, with sampling: share of samples agreeing with the majority
    samples: list[list[float]] | None = None  # per item, with sampling: the value after each sampled critique
    sample_critiques: list[list[str]] | None = None  # per item, with sampling: the critiques
    error: GenRMInputError | None = None
    model_version: str = ""
    model: str = ""  # the checkpoint the version came from
    batch_size: int = 1  # requests merged into the call that served this one
    unavailable: str | None = None  # why no model could serve it (none loaded yet)


@dataclass
class ScoringModel:
    """A loaded GenRM and where it came from."""

    genrm: Any
    source: str
    loaded_at: float

    @classmethod
    def load(cls, source: str, settings: GenRMSettings, store: Any = None) -> ScoringModel:
        from vlgenrm.genrm.model import GenRM

        started = time.monotonic()
        genrm = GenRM.load(source, settings, store=store)
        log.info("loaded %s (version %s) in %.1f s", source, genrm.version, time.monotonic() - started)
        return cls(genrm, source, time.time())

    @property
    def version(self) -> str:
        return self.genrm.version

    @property
    def family(self) -> str:
        return self.genrm.family.name

    def score(self, jobs: list[PointJob]) -> list[JobResult]:
        """P("Yes") per response of every job; a job whose input the GenRM rejects gets its error."""
        return _isolating(jobs, self._score, self)

    def compare(self, jobs: list[PairJob]) -> list[JobResult]:
        """P(first better) per pair of every job (``PairJob.pairs`` order)."""
        return _isolating(jobs, self._compare, self)

    def _score(self, jobs: list[PointJob]) -> list[JobResult]:
        from vlgenrm.genrm.model import PointwiseQuery
        from vlgenrm.genrm.verdicts import Mode, strip_verdict

        critiques: dict[tuple[int, int], str] = {}
        wanting = [(j, i) for j, job in enumerate(jobs) if job.critique_tokens and not job.sampling for i in range(len(job.responses))]
        if wanting:
            # Greedy, so the same request gets the same critique and reward every time.
            tokens = max(jobs[j].critique_tokens or 0 for j, _ in wanting)
            prompts = [(jobs[j].image, self.genrm.prompt(Mode.POINTWISE, jobs[j].question, (jobs[j].responses[i],))) for j, i in wanting]
            texts = self.genrm.generate(prompts, SamplingParams(max_new_tokens=tokens, temperature=0.0, n=1))
            critiques = {key: strip_verdict(t[0]).strip() for key, t in zip(wanting, texts, strict=True)}
        sampled = {
            (j, i): self._sample(job.sampling, job.image, self.genrm.prompt(Mode.POINTWISE, job.question, (response,)))
            for j, job in enumerate(jobs)
            if job.sampling
            for i, response in enumerate(job.responses)
        }
        queries, owners = [], []
        for j, job in enumerate(jobs):
            for i, response in enumerate(job.responses):
                for critique in sampled.get((j, i), [critiques.get((j, i), "")]):
                    queries.append(PointwiseQuery(job.image, job.question, response, critique=critique))
                    owners.append((j, i))
        values = self.genrm.pointwise_probs(queries)
        return _gather(jobs, owners, values, sampled, critiques if wanting else None)

    def _compare(self, jobs: list[PairJob]) -> list[JobResult]:
        from vlgenrm.genrm.model import PairwiseQuery
        from vlgenrm.genrm.verdicts import Mode

        sampled = {
            (j, k): self._sample(job.sampling, job.image, self.genrm.prompt(Mode.PAIRWISE, job.question, (job.responses[a], job.responses[b])))
            for j, job in enumerate(jobs)
            if job.sampling
            for k, (a, b) in enumerate(job.pairs)
        }
        queries, owners = [], []
        for j, job in enumerate(jobs):
            for k, (a, b) in enumerate(job.pairs):
                for critique in sampled.get((j, k), [""]):
                    queries.append(PairwiseQuery(job.image, job.question, job.responses[a], job.responses[b], critique=critique))
                    owners.append((j, k))
        return _gather(jobs, owners, self.genrm.pairwise_probs(queries), sampled, None, items=lambda job: len(job.pairs))

    def _sample(self, sampling: Sampling, image: bytes, prompt: str) -> list[str]:
        """``sampling.n`` critiques of one prompt, generated alone with a seed of its own (the
        request's seed mixed with the image and prompt), so the answer depends neither on what
        else shared the batch nor on where the item stood in its request."""
        from vlgenrm.genrm.verdicts import strip_verdict

        digest = hashlib.sha256(f"{sampling.seed}\0{prompt}\0".encode() + hashlib.sha256(image).digest()).digest()
        params = SamplingParams(
            max_new_tokens=sampling.max_tokens, temperature=sampling.temperature, n=sampling.n, seed=int.from_bytes(digest[:4], "big") % 2**31
        )
        [texts] = self.genrm.generate([(image, prompt)], params)
        return [strip_verdict(t).strip() for t in texts]


def _gather(
    jobs: list,
    owners: list[tuple[int, int]],
    values: list[float],
    sampled: dict[tuple[int, int], list[str]],
    critiques: dict[tuple[int, int], str] | None,
    items: Any = None,
) -> list[JobResult]:
    """Per job: one value per item, the mean over its samples when it was sampled (with the
    agreement of the samples' verdicts: the share on the majority's side of 0.5)."""
    per_item: dict[tuple[int, int], list[float]] = {}
    for owner, value in zip(owners, values, strict=True):
        per_item.setdefault(owner, []).append(value)
    out = []
    for j, job in enumerate(jobs):
        n = items(job) if items else len(job.responses)
        keys = [(j, i) for i in range(n)]
        result = JobResult([sum(per_item[k]) / len(per_item[k]) for k in keys])
        if critiques is not None and getattr(job, "critique_tokens", None) and not job.sampling:
            result.critiques = [critiques[k] for k in keys]
        if job.sampling:
            result.samples = [per_item[k] for k in keys]
            result.agreement = [agreement(per_item[k]) for k in keys]
            result.sample_critiques = [sampled[k] for k in keys]
        out.append(result)
    return out


def agreement(values: list[float]) -> float:
    """Share of the verdicts (value >= 0.5 is "Yes" / "first") on the majority's side."""
    yes = sum(v >= 0.5 for v in values)
    return max(yes, len(values) - yes) / len(values)


def _isolating(jobs: list, run: Any, model: ScoringModel) -> list[JobResult]:
    """Run the merged jobs; if one job's input is bad, rerun one by one so only it fails."""
    try:
        results = run(jobs)
    except GenRMInputError:
        results = []
        for job in jobs:
            try:
                results += run([job])
            except GenRMInputError as exc:
                results.append(JobResult(error=exc))
    for r in results:
        r.model_version, r.model, r.batch_size = model.version, model.source, len(jobs)
    return results


def rank(n: int, pairs: list[tuple[int, int]], p_first: list[float]) -> tuple[list[int], list[float]]:
    """(indices best first, win rate per response): the mean probability of beating each other
    response. Ties keep request order, so the ranking is deterministic."""
    wins = [0.0] * n
    for (a, b), p in zip(pairs, p_first, strict=True):
        wins[a] += p
        wins[b] += 1.0 - p
    rate = [w / (n - 1) for w in wins]
    return sorted(range(n), key=lambda i: (-rate[i], i)), rate


def split_query(query: str, prompt: str | None) -> tuple[str, str]:
    """(question, response) of an OpenRLHF query: the response is what follows its prompt."""
    if prompt is None:
        return "", query
    if not query.startswith(prompt):
        raise ValueError("query does not start with its prompt")
    return prompt, query[len(prompt) :]


def resolve_model(model: str | None, namespace: str, store: Any) -> str:
    """The checkpoint to serve: the configured one, else the namespace's promoted model."""
    if model:
        return model
    from vlgenrm.evaluation.promotion import read_promoted

    record = read_promoted(store, namespace) if store is not None else None
    if record is None:
        raise LookupError(f"no model configured and nothing promoted in namespace {namespace!r} yet")
    return record.model

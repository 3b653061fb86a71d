"""The scoring core (§3.7) the Ray Serve replicas call: a loaded GenRM with its provenance,
pointwise rewards (optionally after a generated critique), pairwise preferences, rankings.

Batching is by *request*: the Serve replica merges concurrent requests into one call here,
and the GenRM splits the merged items into forward passes of ``genrm.batch_size``. All items
of one request therefore go through one model, so a response names exactly one version even
while the model is being swapped.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class PairJob:
    """One compare request: every pair of responses, both orders averaged."""

    image: bytes
    question: str
    responses: tuple[str, ...]

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return list(combinations(range(len(self.responses)), 2))


@dataclass
class JobResult:
    """What a job got back: values (or the typed input error that stopped it), with provenance."""

    values: list[float] = field(default_factory=list)
    critiques: list[str] | None = None
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
        wanting = [(j, i) for j, job in enumerate(jobs) if job.critique_tokens for i in range(len(job.responses))]
        if wanting:
            # Greedy, so the same request gets the same critique and reward every time.
            tokens = max(jobs[j].critique_tokens or 0 for j, _ in wanting)
            prompts = [(jobs[j].image, self.genrm.prompt(Mode.POINTWISE, jobs[j].question, (jobs[j].responses[i],))) for j, i in wanting]
            texts = self.genrm.generate(prompts, SamplingParams(max_new_tokens=tokens, temperature=0.0, n=1))
            critiques = {key: strip_verdict(t[0]).strip() for key, t in zip(wanting, texts, strict=True)}
        queries = [
            PointwiseQuery(job.image, job.question, response, critique=critiques.get((j, i), ""))
            for j, job in enumerate(jobs) for i, response in enumerate(job.responses)
        ]
        flat = iter(self.genrm.pointwise_probs(queries))
        out = []
        for j, job in enumerate(jobs):
            values = [next(flat) for _ in job.responses]
            texts_j = [critiques[(j, i)] for i in range(len(job.responses))] if job.critique_tokens else None
            out.append(JobResult(values, texts_j))
        return out

    def _compare(self, jobs: list[PairJob]) -> list[JobResult]:
        from vlgenrm.genrm.model import PairwiseQuery

        queries = [PairwiseQuery(job.image, job.question, job.responses[a], job.responses[b]) for job in jobs for a, b in job.pairs]
        flat = iter(self.genrm.pairwise_probs(queries))
        return [JobResult([next(flat) for _ in job.pairs]) for job in jobs]


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
    return prompt, query[len(prompt):]


def resolve_model(model: str | None, namespace: str, store: Any) -> str:
    """The checkpoint to serve: the configured one, else the namespace's promoted model."""
    if model:
        return model
    from vlgenrm.evaluation.promotion import read_promoted

    record = read_promoted(store, namespace) if store is not None else None
    if record is None:
        raise LookupError(f"no model configured and nothing promoted in namespace {namespace!r} yet")
    return record.model

"""Scorer test helpers: a fake model handle for :class:`vlgenrm.scoring.serving.ScorerServing`."""

from __future__ import annotations

from typing import Any

from vlgenrm.scoring.core import JobResult, PairJob, PointJob


class FakeModel:
    """Scores a response by its length (longer = better) and records every job it got."""

    def __init__(self, result: JobResult | None = None, info: dict[str, Any] | None = None) -> None:
        self.jobs: list[PointJob | PairJob] = []
        self.result, self._info = result, info if info is not None else {"id": "s3://b/m", "version": "v7", "family": "qwen2_vl", "loaded_at": 1.0}

    async def score(self, job: PointJob) -> JobResult:
        self.jobs.append(job)
        return self.result or JobResult(values=[min(1.0, len(r) / 20) for r in job.responses], model="s3://b/m", model_version="v7", batch_size=3)

    async def compare(self, job: PairJob) -> JobResult:
        self.jobs.append(job)
        values = [1.0 if len(job.responses[a]) > len(job.responses[b]) else 0.0 for a, b in job.pairs]
        return self.result or JobResult(values=values, model="s3://b/m", model_version="v7")

    async def info(self) -> dict[str, Any] | None:
        if isinstance(self._info, Exception):
            raise self._info
        return self._info or None

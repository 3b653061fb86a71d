"""Margin-based rejection sampling (§3.4): accept/reject, top-n, hard pool, DPO pairs, report."""

from vlgenrm.sampling.report import margin_histogram_png, stage_report_markdown
from vlgenrm.sampling.sampler import (
    CategoryStats,
    HardPoolEntry,
    MarginFn,
    MarginHistogram,
    PairSelection,
    SamplerSettings,
    SamplingResult,
    SamplingStats,
    ThresholdPoint,
    margin_histogram,
    normalise_critique,
    sample,
    select,
    shown_responses,
    shown_target,
    target_in_shown_order,
    tau,
)

__all__ = [
    "CategoryStats",
    "HardPoolEntry",
    "MarginFn",
    "MarginHistogram",
    "PairSelection",
    "SamplerSettings",
    "SamplingResult",
    "SamplingStats",
    "ThresholdPoint",
    "margin_histogram",
    "margin_histogram_png",
    "normalise_critique",
    "sample",
    "select",
    "shown_responses",
    "shown_target",
    "stage_report_markdown",
    "target_in_shown_order",
    "tau",
]

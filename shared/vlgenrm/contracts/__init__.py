"""Typed contracts: every message, stored object and API body is one of these models."""

from vlgenrm.contracts.base import CONTRACTS, Contract, utcnow
from vlgenrm.contracts.data import (
    Claim,
    Evidence,
    Example,
    ExpertReport,
    ExpertVerdict,
    ImageRef,
    RationaleCandidate,
    RefinedPair,
    ResponseCoverage,
    ScoredCandidate,
    TrainingRecord,
)
from vlgenrm.contracts.enums import *  # noqa: F403 - the enums are part of the contract surface
from vlgenrm.contracts.iteration import Condition, IterationStatus, ShardRetry, StageDeadlines, StageProgress
from vlgenrm.contracts.stage import DeadLetter, ShardDone, ShardRef, StageEvent, StageTask

__all__ = [
    "CONTRACTS",
    "Claim",
    "Condition",
    "Contract",
    "DeadLetter",
    "Evidence",
    "Example",
    "ExpertReport",
    "ExpertVerdict",
    "ImageRef",
    "IterationStatus",
    "RationaleCandidate",
    "RefinedPair",
    "ResponseCoverage",
    "ScoredCandidate",
    "ShardDone",
    "ShardRef",
    "ShardRetry",
    "StageDeadlines",
    "StageEvent",
    "StageProgress",
    "StageTask",
    "TrainingRecord",
    "utcnow",
]

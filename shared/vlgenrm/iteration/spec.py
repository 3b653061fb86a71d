"""The ``Iteration`` custom resource's spec: typed all the way down, so the CRD generated from
it lets the API server reject a bad stage config before any task exists (one source of truth:
the stage services validate their task configs with the same models)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vlgenrm.contracts.base import Contract
from vlgenrm.contracts.iteration import CAMEL, StageDeadlines
from vlgenrm.evaluation.config import EvaluationSettings
from vlgenrm.experts.config import AnnotationSettings
from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.rationale.config import RationaleSettings, TeacherView
from vlgenrm.sampling.config import SamplerSettings
from vlgenrm.training.config import TrainingConfig

K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CleanupPolicy = Literal["keep", "delete"]


class IterationSpec(Contract):
    """What one iteration of the method should do."""

    model_config = CAMEL
    dataset: str = Field(min_length=1, description="Dataset name in the store (datasets/<name>/manifest.json); its train split is used.")
    eval_set: str = Field(min_length=1, description="Dataset whose eval split (VL-RewardBench export) is the held-out benchmark.")
    base_model: str | None = Field(None, description="Checkpoint to start from: a store URI or a path the services can read.")
    previous_iteration: str | None = Field(
        None, pattern=K8S_NAME, description="Succeeded Iteration (same namespace) whose checkpoint is M_t and whose hard pool is carried on."
    )
    index: int = Field(0, ge=0, description="t: the iteration's position in its chain (sets tau_t).")
    experts: AnnotationSettings = Field(default_factory=AnnotationSettings, description="Vision experts, verification and label refinement (§3.1, §3.2).")
    rationale: RationaleSettings = Field(default_factory=RationaleSettings, description="Critique generation (§3.3).")
    sampling: SamplerSettings = Field(default_factory=SamplerSettings, description="Margin-based rejection sampling (§3.4).")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Training of M_{t+1} on Ray Train (§3.5).")
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings, description="Held-out evaluation and the promotion rule (§3.6).")
    genrm: GenRMSettings | None = Field(None, description="How stages load the GenRM (device, dtype, batch size); None = each service's default.")
    deadlines: StageDeadlines = Field(default_factory=StageDeadlines, description="Per-stage wall-clock limits.")
    backoff_limit: int = Field(3, ge=0, le=20, description="Retries per shard before the Iteration fails.")
    suspend: bool = Field(False, description="Stop publishing tasks; in-flight shards may finish. Unset to resume.")
    cleanup: CleanupPolicy = Field("keep", description="On deletion: keep the Iteration's objects in the store, or delete its stage outputs.")

    @model_validator(mode="after")
    def _has_a_start(self) -> IterationSpec:
        if self.base_model is None and self.previous_iteration is None:
            raise ValueError("set baseModel or previousIteration: training needs a model to start from")
        return self

    @model_validator(mode="after")
    def _no_report_without_experts(self) -> IterationSpec:
        if not self.experts.enabled and self.rationale.teacher_sees is not TeacherView.LABEL:
            raise ValueError("experts.enabled=false writes no expert report: set rationale.teacherSees=label")
        return self

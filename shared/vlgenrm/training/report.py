"""The training stage report: what data went in, how the loss went, what came out."""

from __future__ import annotations

import io

from pydantic import Field

from vlgenrm.contracts import Contract
from vlgenrm.training.config import TrainingConfig
from vlgenrm.training.data import DataReport
from vlgenrm.training.loop import TrainerState


class TrainingReport(Contract):
    """Written next to the stage's marker; the Iteration's metrics come from it."""

    init_model: str = Field(description="The checkpoint training started from.")
    checkpoint_uri: str = Field(description="The exported model M_{t+1} (Hugging Face format).")
    model_version: str
    config: TrainingConfig
    data: DataReport
    state: TrainerState
    metrics: dict[str, float] = Field(default_factory=dict)

    def to_markdown(self) -> str:
        d, s, m = self.data, self.state, self.metrics
        lines = [
            f"# Training: {self.model_version}",
            "",
            f"- Started from `{self.init_model}`; exported to `{self.checkpoint_uri}`.",
            f"- Data: {d.usable} usable records of {d.lines} lines ({d.malformed} malformed, {d.duplicates} duplicates, "
            f"{d.missing_images} with missing images).",
            f"- {s.step} optimizer steps x {self.config.batch_size} examples on {self.config.workers} worker(s), "
            f"{self.config.objective.value}, lr {self.config.learning_rate:g}{', LoRA' if self.config.lora else ''}.",
            f"- Loss {m.get('first_loss', float('nan')):.4f} -> {m.get('final_loss', float('nan')):.4f}; "
            f"{m.get('samples_per_s', 0.0):.1f} samples/s over {s.train_seconds:.1f} s of training.",
        ]
        if s.skipped:
            lines.append(f"- Skipped while training: {', '.join(f'{k} {v}' for k, v in sorted(s.skipped.items()))}.")
        if d.problems:
            lines += ["", "## Problems in the data (first ones)", ""] + [f"- {p}" for p in d.problems]
        return "\n".join(lines) + "\n"


def loss_curve_png(state: TrainerState) -> bytes:
    """Training loss against optimizer step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: plotting is optional
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([p.step for p in state.history], [p.loss for p in state.history], marker="." if len(state.history) < 50 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()

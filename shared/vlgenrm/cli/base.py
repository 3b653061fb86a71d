"""``vlgenrm base``: the embedded default's pretrained base VLM (built once, cached)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

base_app = typer.Typer(help="The embedded base VLM: a tiny model pretrained on captions and VQA from scene truth.", no_args_is_help=True)
console = Console()


def _config(path: Path | None):  # noqa: ANN202 - PretrainConfig, imported lazily (torch)
    from pydantic import ValidationError

    from vlgenrm.genrm.pretrain import PretrainConfig

    try:
        return PretrainConfig.model_validate(yaml.safe_load(path.read_text()) or {}) if path else PretrainConfig()
    except ValidationError as exc:
        console.print(f"[red]invalid base config:[/red] {exc}")
        raise typer.Exit(2) from exc


@base_app.command("build")
def build(
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of PretrainConfig fields (default: the embedded default's).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache folder (default ~/.cache/vlgenrm/base, or $VLGENRM_BASE_CACHE).")] = None,
    out: Annotated[Path | None, typer.Option(help="Also copy the built checkpoint here.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show transformers' own logs.")] = False,
) -> None:
    """Build the base (or find it in the cache) and print its ladder: held-out VQA accuracy per rung."""
    import shutil

    from vlgenrm.genrm.pretrain import cached_base
    from vlgenrm.quiet import quiet_run

    pretrain_config = _config(config)
    with (
        quiet_run(verbose),
        Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=console
        ) as bar,
    ):
        task = bar.add_task(f"pretraining {pretrain_config.family} {pretrain_config.digest()}", total=pretrain_config.total_steps, loss="")
        directory, report = cached_base(
            pretrain_config, cache_dir, progress=lambda step, total, loss: bar.update(task, completed=step, loss=f"loss {loss:.3f}")
        )
    console.print(report.table())
    if report.vision is not None:
        console.print(report.vision.line())
    console.print(f"built in {report.seconds / 60:.1f} min; weights {report.version}")
    console.print(f"base: {directory}", markup=False, soft_wrap=True)
    if out is not None:
        shutil.copytree(directory, out, dirs_exist_ok=True)
        console.print(f"copied to {out}", markup=False)


@base_app.command("show")
def show(
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of PretrainConfig fields.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache folder.")] = None,
) -> None:
    """Where the base of this config is cached and its ladder, if it was built."""
    from vlgenrm.genrm.pretrain import cache_path, load_report

    directory = cache_path(_config(config), cache_dir)
    report = load_report(directory) if directory.exists() else None
    if report is None:
        console.print(f"not built yet: {directory} (vlgenrm base build)", markup=False)
        raise typer.Exit(1)
    console.print(report.table())
    if report.vision is not None:
        console.print(report.vision.line())
    console.print(f"base: {directory}", markup=False, soft_wrap=True)


@base_app.command("ladder")
def ladder(
    model: Annotated[str, typer.Option(help="Checkpoint folder to test (a base, or a trained GenRM: does it still see?).")],
    items: Annotated[int, typer.Option(min=1, help="Held-out items per rung.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the held-out scenes (the base's own held-out split for its seed).")] = 0,
) -> None:
    """Held-out accuracy of a checkpoint on every rung of the learnability ladder."""
    from rich.table import Table

    from vlgenrm.genrm.model import GenRM
    from vlgenrm.genrm.pretrain import PretrainConfig, eval_items, ladder_accuracy
    from vlgenrm.quiet import quiet_run

    with quiet_run():
        rungs = ladder_accuracy(GenRM.load(model), eval_items(PretrainConfig(eval_items=items, seed=seed)))
    table = Table(title=f"ladder of {model}")
    for column in ("rung", "chance", "accuracy", "95 % CI", "n"):
        table.add_column(column)
    for r in rungs:
        table.add_row(r.kind.value, f"{r.chance:.2f}", f"{r.accuracy:.3f}", f"{r.low:.3f}-{r.high:.3f}", str(r.n))
    console.print(table)

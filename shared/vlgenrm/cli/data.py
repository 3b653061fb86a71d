"""``vlgenrm data``: datasets in the store (the synthetic domain of §7)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vlgenrm.settings import Settings

data_app = typer.Typer(help="Datasets: generate the synthetic domain of coloured shapes and signs.", no_args_is_help=True)
console = Console()


# Defaults repeat SynthConfig's (a test keeps them equal): importing it here would load
# Pillow on every `vlgenrm` invocation.
@data_app.command("synth")
def synth(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Dataset name: written under datasets/<name>/.")] = "synth",
    train: Annotated[int, typer.Option("--train", min=0, help="Training pairs.")] = 1000,
    eval_: Annotated[int, typer.Option("--eval", min=0, help="Held-out evaluation pairs.")] = 200,
    image_size: Annotated[int, typer.Option(min=192, help="Image width and height in pixels.")] = 224,
    label_noise: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of human labels flipped.")] = 0.30,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes the same bytes.")] = 0,
    shard_size: Annotated[int, typer.Option(min=1, help="Examples per shard file.")] = 64,
) -> None:
    """Generate a synthetic preference dataset (images, pairs, noisy labels, truth) into the store."""
    from pydantic import ValidationError

    from vlgenrm.store import make_store
    from vlgenrm.synth.dataset import SynthConfig, generate_dataset, manifest_key

    settings: Settings = ctx.obj["settings"]
    try:
        config = SynthConfig(name=name, n_train=train, n_eval=eval_, image_size=image_size, label_noise=label_noise, seed=seed, shard_size=shard_size)
    except ValidationError as exc:
        console.print(f"[red]invalid options:[/red] {exc}")
        raise typer.Exit(2) from exc
    store = make_store(settings.store)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
            tasks = {split: bar.add_task(f"{split:>5}", total=config.count(split)) for split in ("train", "eval")}
            manifest = generate_dataset(config, store, lambda split, done, total: bar.update(tasks[split], completed=done))
        table = Table(title=f"dataset {manifest.name}")
        for column in ("split", "examples", "shards"):
            table.add_column(column)
        for split, info in manifest.splits.items():
            table.add_row(split, str(info.count), str(len(info.shards)))
        console.print(table)
        console.print(f"manifest: {store.uri(manifest_key(manifest.name))}", markup=False, soft_wrap=True)
        if manifest.eval_export:
            console.print(f"eval (VL-RewardBench format): {store.uri(manifest.eval_export)}", markup=False, soft_wrap=True)
    finally:
        store.close()

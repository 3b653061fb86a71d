"""``vlgenrm``: one entry point for every vlgenrm command. Subcommands stay thin: they parse
options, call the library and print."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from vlgenrm import __version__
from vlgenrm.errors import ConfigError
from vlgenrm.settings import Settings, load_settings

app = typer.Typer(
    name="vlgenrm",
    help=(
        "Train and serve vision-language generative reward models (VL-GenRM).\n\n"
        "Settings come from defaults, a YAML file (--config or $VLGENRM_CONFIG), environment "
        "variables (VLGENRM_BUS__KIND=kafka, ...) and --set overrides, later ones winning."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="JSON Schemas of the typed contracts (messages, objects, CRD parts).", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)
crd_app = typer.Typer(help="The Iteration CustomResourceDefinition, generated from the typed spec and status.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")
app.add_typer(config_app, name="config")
app.add_typer(crd_app, name="crd")
chart_app = typer.Typer(help="The Helm chart's values.yaml, values.schema.json and README.md, generated from the typed values.", no_args_is_help=True)
app.add_typer(chart_app, name="chart")


def _register_subcommands() -> None:
    # Imported here so `vlgenrm --help` stays fast: each group imports only what it needs.
    from vlgenrm.cli.base import base_app
    from vlgenrm.cli.data import data_app

    app.add_typer(data_app, name="data")
    app.add_typer(base_app, name="base")


console = Console()
_register_subcommands()


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj["settings"]


def _version(value: bool) -> None:
    if value:
        console.print(f"vlgenrm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file.", envvar="VLGENRM_CONFIG")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override one setting, e.g. --set bus.kind=kafka.")] = None,
    log_level: Annotated[str | None, typer.Option(help="Logging level (DEBUG, INFO, WARNING, ...).")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    try:
        settings = load_settings(config, overrides or [])
    except (ConfigError, ValueError) as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc
    level = (log_level or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":  # kafka-python narrates every reconnect at INFO
        logging.getLogger("kafka").setLevel(logging.WARNING)
    ctx.obj = {"settings": settings}


@schemas_app.command("export")
def schemas_export(out: Annotated[Path, typer.Option(help="Folder to write *.schema.json into.")] = Path("schemas")) -> None:
    """Write the JSON Schema of every contract (one file per contract and version)."""
    from vlgenrm.contracts.schemas import export_schemas

    written = export_schemas(out)
    console.print(f"wrote {len(written)} schemas to {out}/")


@schemas_app.command("check")
def schemas_check(directory: Annotated[Path, typer.Option("--dir", help="Folder holding the exported schemas.")] = Path("schemas")) -> None:
    """Fail when the exported schemas differ from the contracts in the code."""
    from vlgenrm.contracts.schemas import stale_schemas

    stale = stale_schemas(directory)
    if stale:
        console.print(f"[red]stale schemas in {directory}/:[/red] {', '.join(stale)}\nrun: vlgenrm schemas export --out {directory}")
        raise typer.Exit(1)
    console.print(f"schemas in {directory}/ are up to date")


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective settings as YAML (secrets masked)."""
    console.print(yaml.safe_dump(_settings(ctx).model_dump(mode="json"), sort_keys=False), end="", markup=False)


@crd_app.command("export")
def crd_export(
    out: Annotated[Path | None, typer.Option(help="File to write (default: the Helm chart's crds/ file under --root).")] = None,
    root: Annotated[Path, typer.Option(help="Repository root.")] = Path("."),
) -> None:
    """Write the CRD YAML (into the chart by default)."""
    from vlgenrm.iteration.crd import CRD_PATH, render

    path = out or root / CRD_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    console.print(f"wrote {path}")


@crd_app.command("check")
def crd_check(
    path: Annotated[Path | None, typer.Option(help="File to compare (default: the Helm chart's crds/ file under --root).")] = None,
    root: Annotated[Path, typer.Option(help="Repository root.")] = Path("."),
) -> None:
    """Fail when the CRD file differs from what the code generates."""
    from vlgenrm.iteration.crd import CRD_PATH, is_stale

    target = path or root / CRD_PATH
    if is_stale(target):
        console.print(f"[red]{target} is stale[/red]: run `vlgenrm crd export`")
        raise typer.Exit(1)
    console.print(f"{target} is up to date")


@chart_app.command("export")
def chart_export(root: Annotated[Path, typer.Option(help="Repository root (the chart is charts/vlgenrm under it).")] = Path(".")) -> None:
    """Write charts/vlgenrm/values.yaml, values.schema.json and README.md from vlgenrm.deploy.values."""
    from vlgenrm.deploy.values import export

    for path in export(root):
        console.print(f"wrote {path}")


@chart_app.command("check")
def chart_check(root: Annotated[Path, typer.Option(help="Repository root (the chart is charts/vlgenrm under it).")] = Path(".")) -> None:
    """Fail when values.yaml, values.schema.json or README.md differ from what the code generates."""
    from vlgenrm.deploy.values import stale_files

    stale = stale_files(root)
    for path in stale:
        console.print(f"[red]{path} is stale[/red]: run `vlgenrm chart export`")
    if stale:
        raise typer.Exit(1)
    console.print("values.yaml, values.schema.json and README.md are up to date")


@app.command()
def doctor(ctx: typer.Context, fix: Annotated[bool, typer.Option(help="Create missing topics and bucket.")] = False) -> None:
    """Check the configured Kafka and S3: reachable, authenticated, topics and bucket present."""
    from vlgenrm.doctor import CheckStatus, diagnose

    checks = diagnose(_settings(ctx), fix=fix)
    table = Table(title="vlgenrm doctor")
    for column in ("component", "check", "status", "detail"):
        table.add_column(column)
    colour = {CheckStatus.OK: "green", CheckStatus.WARN: "yellow", CheckStatus.FAIL: "red"}
    for c in checks:
        table.add_row(c.component, c.check, f"[{colour[c.status]}]{c.status.value}[/]", c.detail)
    console.print(table)
    failed = [c for c in checks if c.status is CheckStatus.FAIL]
    if failed:
        console.print(f"[red]{len(failed)} check(s) failed[/red]")
        raise typer.Exit(1)
    console.print("[green]all checks passed[/green]")


@app.command()
def run(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of RunConfig fields (data, arms, seeds, iterations, spec, ...).")] = None,
    iterations: Annotated[int | None, typer.Option(min=1, help="Chained Iterations per arm and seed (default 2).")] = None,
    ablate_experts: Annotated[bool, typer.Option(help="Also run the no-experts control arm (human labels, no expert anywhere).")] = False,
    ablations: Annotated[
        bool,
        typer.Option(help="The ablation study: full method, no experts, no evidence in rationales, no margin filter, no verdict loss; 2 iterations x 3 seeds."),
    ] = False,
    uniform_labeler: Annotated[bool, typer.Option(help="Human labels flipped uniformly at random (label_noise) instead of the biased labeler.")] = False,
    report: Annotated[Path | None, typer.Option(help="Folder for report.md, summary.json and the plots (default vlgenrm-report).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the services', Ray's and transformers' own logs.")] = False,
) -> None:
    """Run the whole loop on this machine: synthetic data, the embedded base VLM (built once and
    cached), N chained Iterations per arm and seed (experts -> rationales -> rejection sampling ->
    Ray Train -> evaluation -> promotion) on the in-memory bus and local Ray, then a report with
    intervals, collapse checks and the arms side by side. The same state machine as the operator."""
    import time

    import yaml
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vlgenrm.cli.run.app import RunConfig, base_report, run_demo
    from vlgenrm.cli.run.report import write_report
    from vlgenrm.contracts import Phase, Stage
    from vlgenrm.quiet import quiet_run
    from vlgenrm.services import stage_workers
    from vlgenrm.settings import BusKind
    from vlgenrm.synth.dataset import LabelerConfig

    raw = yaml.safe_load(config.read_text()) if config else {}
    update = {k: v for k, v in {"iterations": iterations, "report_dir": report}.items() if v is not None}
    try:
        run_config = (RunConfig.ablations if ablations else RunConfig)(**(raw or {}))
        if ablate_experts:
            update["ablate_experts"] = True  # RunConfig adds the arm
        if uniform_labeler:
            update["data"] = run_config.data.model_copy(update={"labeler": LabelerConfig()})
        run_config = RunConfig.model_validate(run_config.model_dump() | update)
    except ValueError as exc:
        console.print(f"[red]invalid run config:[/red] {exc}")
        raise typer.Exit(2) from exc
    settings = _settings(ctx)
    # The stage services run as threads of this process: they share an in-memory bus.
    settings = settings.model_copy(
        update={
            "bus": settings.bus.model_copy(update={"kind": BusKind.MEMORY}),
            "ray": settings.ray.model_copy(update={"log_to_driver": verbose}),  # Ray workers' chatter stays in their log files
        }
    )
    started = time.monotonic()
    arms, seeds = ", ".join(a.value for a in run_config.arms), ", ".join(map(str, run_config.seeds))
    console.print(f"vlgenrm run: arms {arms}; seeds {seeds}; {run_config.iterations} iteration(s) each; report in {run_config.report_dir}")
    with (
        quiet_run(verbose),
        Progress(TextColumn("{task.description:<34}"), BarColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console) as bars,
    ):
        tasks: dict[str, int] = {}

        def on_base(step: int, total: int, loss: float) -> None:
            if "base" not in tasks:
                tasks["base"] = bars.add_task("building the base VLM (cached)", total=total, detail="")
            bars.update(tasks["base"], completed=step, detail=f"loss {loss:.3f}")

        def on_status(name: str, status) -> None:  # noqa: ANN001 - IterationStatus
            if name not in tasks:
                tasks[name] = bars.add_task(name, total=len(Stage), detail="")
            bars.update(tasks[name], completed=status.phase.stages_done, detail=f"{status.phase.value} {status.progress}")

        results = run_demo(run_config, settings, stage_workers(), on_status=on_status, on_base=on_base)
    from vlgenrm.store import make_store

    store = make_store(settings.store)
    try:
        path = write_report(results, run_config, run_config.report_dir, time.monotonic() - started, store=store, base_report=base_report(run_config, store))
    finally:
        store.close()
    from vlgenrm.cli.run.report import load_summary

    summary = load_summary(run_config.report_dir)
    table = Table(title=f"vlgenrm run ({(time.monotonic() - started) / 60:.1f} min)")
    for column in ("arm", "seed", "t", "accuracy", "95 % CI", "|p-0.5|", "records", "right", "promoted"):
        table.add_column(column)
    for r in summary.iterations:
        acc = "-" if r.accuracy is None else f"{r.accuracy:.3f}" + (" collapsed" if r.collapsed else "")
        ci = "-" if r.accuracy_low is None else f"{r.accuracy_low:.2f}-{r.accuracy_high:.2f}"
        table.add_row(
            r.variant,
            str(r.seed),
            str(r.index),
            acc,
            ci,
            "-" if r.mean_confidence is None else f"{r.mean_confidence:.3f}",
            str(r.training_records),
            "-" if r.training_label_accuracy is None else f"{r.training_label_accuracy:.3f}",
            "yes" if r.promoted else "no",
        )
    console.print(table)
    if len(run_config.seeds) > 1:
        arms_table = Table(title="arms over seeds")
        for column in ("arm", "t", "seeds", "accuracy mean ± std", "pooled 95 % CI", "records right"):
            arms_table.add_column(column)
        for a in sorted(summary.ablations, key=lambda a: (a.variant, a.index)):
            arms_table.add_row(
                a.variant,
                str(a.index),
                str(a.seeds),
                f"{a.accuracy_mean:.3f} ± {a.accuracy_std:.3f}",
                f"{a.accuracy_low:.3f}-{a.accuracy_high:.3f}",
                "-" if a.training_label_accuracy is None else f"{a.training_label_accuracy:.3f}",
            )
        console.print(arms_table)
    console.print(f"report: {path}  (summary.json beside it)")
    if any(r.status.phase is not Phase.SUCCEEDED for r in results):
        raise typer.Exit(1)


@app.command()
def serve(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Checkpoint folder or store URI to serve (default: serving.model, else the promoted model).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default: serving.port).")] = None,
    insecure: Annotated[bool, typer.Option(help="Accept calls without an API key (only on a trusted machine).")] = False,
    hash_key: Annotated[str | None, typer.Option(help="Print the SHA-256 to configure for this API key, and exit.")] = None,
) -> None:
    """Serve the GenRM over HTTP on Ray Serve: /v1/score, /v1/compare, /get_reward (OpenRLHF)."""
    if hash_key is not None:
        from vlgenrm.scoring.security import hash_key as digest

        console.print(digest(hash_key))
        return
    from vlgenrm.services.scorer.server import serve_forever

    settings = _settings(ctx)
    update: dict = {}
    if model:
        update["model"] = model
    if port:
        update["port"] = port
    if insecure:
        update["security"] = settings.serving.security.model_copy(update={"require_api_key": False})
    serve_forever(settings.model_copy(update={"serving": settings.serving.model_copy(update=update)}))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

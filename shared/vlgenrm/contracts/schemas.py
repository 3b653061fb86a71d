"""JSON Schema export of the contracts, and a staleness check against the committed files."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from vlgenrm.contracts.base import CONTRACTS, Contract


def schema_filename(model: type[Contract]) -> str:
    return f"{model.__name__}.v{model.SUPPORTED_VERSIONS[0]}.schema.json"


#: Modules whose contracts are published. Only these count, so a Contract subclass defined
#: elsewhere (a test, a plugin) never changes the exported set.
CONTRACT_MODULES = (
    "vlgenrm.contracts",
    "vlgenrm.evaluation.benchmark",
    "vlgenrm.evaluation.report",
    "vlgenrm.synth.scene",
    "vlgenrm.synth.dataset",
    "vlgenrm.sampling.sampler",
    "vlgenrm.evaluation.run",
    "vlgenrm.evaluation.promotion",
    "vlgenrm.training.report",
    "vlgenrm.iteration.spec",
)


def published_contracts() -> dict[str, type[Contract]]:
    for module in CONTRACT_MODULES:
        importlib.import_module(module)  # importing registers the module's contracts
    return {n: c for n, c in CONTRACTS.items() if c.__module__.startswith(CONTRACT_MODULES)}


def render_schemas() -> dict[str, str]:
    """File name -> JSON text for every contract, deterministic (sorted keys, trailing newline)."""
    out = {}
    contracts = published_contracts()
    for name in sorted(contracts):
        model = contracts[name]
        schema = model.model_json_schema(by_alias=True, mode="validation")
        schema["$id"] = f"https://vlgenrm.io/schemas/{schema_filename(model)}"
        out[schema_filename(model)] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def export_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory`` and remove schema files no contract produces."""
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    for stale in directory.glob("*.schema.json"):
        if stale.name not in rendered:
            stale.unlink()
    written = []
    for filename, text in rendered.items():
        path = directory / filename
        path.write_text(text)
        written.append(path)
    return written


def stale_schemas(directory: Path) -> list[str]:
    """Names of files in ``directory`` that differ from, lack, or outlive the current contracts."""
    rendered = render_schemas()
    problems = [n for n, text in rendered.items() if not (directory / n).is_file() or (directory / n).read_text() != text]
    problems += [p.name for p in directory.glob("*.schema.json") if p.name not in rendered]
    return sorted(problems)

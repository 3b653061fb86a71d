"""The Iteration spec is built from config-only leaf modules: loading it (and generating the CRD
and the chart from it) imports no stage logic and no heavy library."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from vlgenrm.iteration.spec import IterationSpec

#: vlgenrm modules that are not config leaves but may load with the spec.
ALLOWED = {"vlgenrm.settings", "vlgenrm.errors", "vlgenrm.retry", "vlgenrm.iteration.spec", "vlgenrm.iteration.crd", "vlgenrm.deploy.values"}
HEAVY = ("torch", "numpy", "cv2", "PIL", "transformers", "httpx", "ray", "kafka", "boto3")

PROBE = """
import json, sys
from vlgenrm.iteration.crd import render
from vlgenrm.deploy.values import rendered
render(); rendered()
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('vlgenrm',) + {heavy!r})))
"""


def loaded_modules() -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def is_leaf(module: str) -> bool:
    """A config module, a contract, a package's own ``__init__`` (kept import-free) or an allowed one."""
    parts = module.split(".")
    package = importlib.util.find_spec(module).submodule_search_locations is not None
    return module in ALLOWED or parts[-1] == "config" or "contracts" in parts or package


def test_the_crd_and_chart_load_only_config_leaves():
    mods = loaded_modules()
    assert "vlgenrm.experts.config" in mods and "vlgenrm.sampling.config" in mods  # the probe did build the spec
    assert [m for m in mods if m.split(".")[0] in HEAVY] == []
    assert [m for m in mods if m.startswith("vlgenrm") and not is_leaf(m)] == []


def test_the_leaf_check_catches_a_runtime_module():
    assert not is_leaf("vlgenrm.sampling.sampler") and not is_leaf("vlgenrm.experts.pipeline")
    assert is_leaf("vlgenrm.sampling.config") and is_leaf("vlgenrm.contracts.stage") and is_leaf("vlgenrm.sampling")


def test_spec_blocks_are_the_config_modules_own_classes():
    from vlgenrm.evaluation.config import EvaluationSettings
    from vlgenrm.experts.config import AnnotationSettings
    from vlgenrm.rationale.config import RationaleSettings
    from vlgenrm.sampling.config import SamplerSettings

    fields = IterationSpec.model_fields
    assert fields["experts"].annotation is AnnotationSettings and fields["rationale"].annotation is RationaleSettings
    assert fields["sampling"].annotation is SamplerSettings and fields["evaluation"].annotation is EvaluationSettings

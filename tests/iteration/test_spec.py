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


def test_the_wire_form_is_camel_case_at_every_level_and_python_names_still_validate():
    wire = {
        "dataset": "d",
        "evalSet": "e",
        "baseModel": "s3://b/m",
        "training": {"batchSize": 8, "maxSteps": 3, "lora": {"targetModules": ["q_proj"]}},
        "rationale": {"teacherSees": "label", "withEvidence": False, "engine": {"retry": {"maxAttempts": 2}}},
        "experts": {"enabled": False, "experts": {"openVocab": {"enabled": True}}},
        "sampling": {"deltaTau": 0.25},
    }
    spec = IterationSpec.model_validate(wire)
    assert (spec.training.batch_size, spec.training.lora.target_modules, spec.rationale.engine.retry.max_attempts) == (8, ["q_proj"], 2)
    assert spec.experts.experts.open_vocab.enabled and spec.sampling.delta_tau == 0.25
    python = IterationSpec.model_validate(spec.model_dump())  # snake_case, as vlgenrm run and task configs write it
    assert python == spec
    dumped = json.dumps(spec.model_dump(by_alias=True, mode="json"))
    assert IterationSpec.model_validate_json(dumped) == spec
    assert '"batchSize"' in dumped and '"maxAttempts"' in dumped and '"openVocab"' in dumped and "batch_size" not in dumped

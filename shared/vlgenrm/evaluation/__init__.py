"""Evaluation and promotion (§3.6): score a GenRM on a held-out benchmark, decide promotion.

``config`` holds the stage's settings (a leaf), ``run`` scores a GenRM, ``promotion`` decides
and records promotion. The model-free harness (benchmark loader, metrics, EvaluationReport) is
:mod:`vlgenrm.genrm.evaluation`; the stage that runs this in a service is
:mod:`vlgenrm.evaluation.stage` (it needs the store and the GenRM).
"""

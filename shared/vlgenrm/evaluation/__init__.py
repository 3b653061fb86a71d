"""Evaluation and promotion (§3.6): score a GenRM on a held-out benchmark, decide promotion.

``config`` holds the stage's settings (a leaf); ``benchmark`` loads a held-out set, ``metrics``
turns predictions into accuracies (one credit rule), ``report`` is the EvaluationReport — none
of them runs a model; ``run`` scores a GenRM, ``promotion`` decides and records promotion, and
``stage`` runs it all in a service (it needs the store and the GenRM).
"""

"""Kubernetes operators (the kopf ``Iteration`` operator), installed as ``vlgenrm.operators``."""

"""The GenRM core: model adapter, prompts and verdicts, scoring, training math, evaluation.

One implementation for every stage: the rationale generator, the sampler's margins, the
trainer, the scorer and evaluation all call this package, on a tiny CPU model in tests and
on a 7B checkpoint on GPUs in clusters.
"""

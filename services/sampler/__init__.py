"""The sampler service: consumes ``tasks.sampling`` (writes the training set, §3.4) and
``tasks.evaluation`` (writes the evaluation report and promotion decision, §3.6)."""

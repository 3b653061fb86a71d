"""The sampler service: consumes ``tasks.sampling`` and writes the training set (§3.4)."""

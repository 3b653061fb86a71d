"""The experts service: consumes ``tasks.experts`` and writes reports and refined pairs."""

"""The trainer service: consumes ``tasks.training`` and trains M_{t+1} on Ray Train (§3.5)."""

"""The rationale service: consumes ``tasks.rationale`` and writes candidate critiques."""

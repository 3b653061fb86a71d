"""Scoring (§3.7) behind the Ray Serve endpoint: request/response models, typed serving
config, API-key auth and rate limits, guarded image fetching, and the batched scoring core."""

"""What the Ray Client tests and the chart tests agree on."""

from __future__ import annotations

#: What the chart sets on the trainer's Ray head: without it Ray Client's proxier forks its
#: per-driver server while gRPC threads run and the child often dies (ray-project/ray#63202;
#: here about half of the connections needed a retry, none with it in 8 runs).
RAY_CLIENT_HEAD_ENV = {"GRPC_ENABLE_FORK_SUPPORT": "0"}

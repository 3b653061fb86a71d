"""The scorer service: the GenRM behind a Ray Serve HTTP endpoint (§3.7), hot-swapping to
newly promoted checkpoints."""

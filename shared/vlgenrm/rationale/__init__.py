"""Expert-grounded rationales (§3.3): engines that write critiques, and the rationale stage."""

"""Vision experts (§3.1, §3.2): claims, pluggable experts, verification, label refinement."""

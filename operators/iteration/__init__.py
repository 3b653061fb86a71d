"""The kopf operator that advances ``Iteration`` resources with the shared state machine."""

"""The Iteration: its typed spec (the CRD's source of truth), the pure state machine the
operator and the local driver share, and the CRD generated from both."""

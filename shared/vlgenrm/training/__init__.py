"""The trainer (§3.5): typed config, the training set's checks, the Ray Train worker loop and
its driver. ``config`` imports neither torch nor Ray, so the CLI and the operator can use it."""

"""Margin-based rejection sampling (§3.4): accept/reject, top-n, hard pool, DPO pairs, report.

``config`` holds the stage's settings (a leaf), ``sampler`` the logic, ``report`` its Markdown and plots."""

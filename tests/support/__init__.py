"""Shared test helpers (tests mirror the source tree; what several test packages use lives here)."""

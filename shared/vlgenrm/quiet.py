"""Quiet console for long local runs: what a person reads is progress bars and a summary, not
the libraries' narration (Ray's start-up notices, transformers' weight-loading bars, per-step
training reports). ``--verbose`` leaves everything as it is."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: Set for this process and the Ray workers it starts (they inherit the environment).
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "RAY_DEDUP_LOGS": "1",
    "PYTHONWARNINGS": "ignore",
}
#: Loggers that narrate at INFO/WARNING what a person running the demo need not read.
NOISY_LOGGERS = ("ray", "ray.train", "ray.tune", "ray.data", "transformers", "torch", "filelock", "urllib3", "vlgenrm")


@contextmanager
def quiet_run(verbose: bool = False) -> Iterator[None]:
    """Inside: library logs at ERROR only, no weight-loading bars, Ray workers' output not forwarded."""
    if verbose:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in QUIET_ENV}
    saved_levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    os.environ.update(QUIET_ENV)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # transformers is an optional extra
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)

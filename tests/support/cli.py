"""Running the ``vlgenrm`` command in-process, its output flattened for assertions."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from vlgenrm.cli.main import app

runner = CliRunner()


class Outcome:
    """Exit code and the output with rich's table borders and line wrapping flattened."""

    def __init__(self, result) -> None:
        self.exit_code = result.exit_code
        self.output = " ".join(re.sub(r"[│┃║]", " ", result.output).split())


def invoke(*args: str) -> Outcome:
    return Outcome(runner.invoke(app, list(args)))

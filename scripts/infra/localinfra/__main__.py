"""``python -m localinfra``: see :mod:`localinfra.cli`."""

import sys

from localinfra.cli import main

sys.exit(main())

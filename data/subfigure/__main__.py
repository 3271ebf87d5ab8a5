"""``python -m data.subfigure --input figures.json --out DIR [--workers N]``."""

import sys

from data.subfigure.cli import main

sys.exit(main())

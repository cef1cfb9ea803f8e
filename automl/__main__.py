"""``python -m automl`` runs the CLI."""

import sys

from automl.cli.entry import run

sys.exit(run())

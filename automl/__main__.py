"""``python -m automl`` runs the CLI."""

import sys

from automl.cli.main import main

sys.exit(main())

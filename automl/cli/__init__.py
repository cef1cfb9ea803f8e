"""The ``automl`` command line."""

"""Delivering a study's best model: predictions, annotation assist, bundles and cards.

Submodules are imported on demand (``automl.delivery.inference`` needs torch;
``automl.delivery.schemas`` is plain pydantic, for thin clients).
"""

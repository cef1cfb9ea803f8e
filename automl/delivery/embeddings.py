"""Penultimate-layer embeddings of validation images, and their 2-D projections.

Every model is ``nn.Sequential(backbone, head)`` (``automl.models.base``): the backbone's
output, the head's input, is the penultimate layer. ``validation_embeddings`` runs a
subsample of the trial's validation split through the backbone of its (cached) serving
model; ``pca_2d`` and ``tsne_2d`` flatten those features to two dimensions for a plot.

Both projections first check that the features can be projected at all
(``check_projectable``): a model that maps its validation images to the same (or nearly the
same) features, or to NaN or infinity, gives nothing to plot, and scikit-learn's
Barnes-Hut t-SNE divides by the zero spread of such features and then crashes the whole
process (a segmentation fault, not an exception). They raise ``DegenerateEmbeddingsError``
instead, whose message says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from torch import nn

from automl.data import DatasetError, load_dataset
from automl.delivery.inference import (
    ModelUnavailableError,
    ServingModel,
    ServingTrial,
    error_text,
    load_serving_model,
)
from automl.store import Store, attrs
from automl.train.trial_config import stored_config

MAX_POINTS = 500
"""Validation images embedded at most: t-SNE then takes a few seconds on a CPU."""

MAX_DECODED_BYTES = 256 * 2**20
"""Largest dataset (decoded: images x channels x height x width bytes, every split) whose
validation images are embedded: loading it decodes every split in the API's process, whose
memory then peaks at several times that (a tester's 176 MB folder: 1.1 GB more)."""

MIN_POINTS = 5
"""Fewer validation images (or distinct embeddings) than this give no meaningful projection."""

RELATIVE_TOLERANCE = 1e-6
"""Two embeddings closer than this fraction of the largest absolute feature count as the
same point: a few float32 rounding steps (machine epsilon is about 1.2e-7)."""

BATCH = 256


class DegenerateEmbeddingsError(ValueError):
    """The embeddings cannot be projected: non-finite, or too few distinct points."""


@dataclass(frozen=True)
class Embeddings:
    """Features of validation images and their classes.

    Attributes:
        features: float32 ``(N, D)``, the backbone's output per image.
        labels: int ``(N,)``, each image's true class index.
        classes: Class names in index order.
        total: Validation images available (``N`` or more: they were subsampled).
    """

    features: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    total: int


def subsample(count: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Up to ``max_points`` indices of ``range(count)``, drawn without replacement, sorted."""
    if count <= max_points:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=max_points, replace=False))


@torch.inference_mode()
def backbone_features(served: ServingModel, images: torch.Tensor) -> np.ndarray:
    """The penultimate-layer features of uint8 images ``(N, C, H, W)``, float32 ``(N, D)``.

    Raises:
        ModelUnavailableError: If the model is not ``nn.Sequential(backbone, head)``.
    """
    model = served.model
    if not isinstance(model, nn.Sequential) or len(model) != 2:
        raise ModelUnavailableError(
            f"{type(model).__name__} is not nn.Sequential(backbone, head): no penultimate layer"
        )
    backbone, accel = model[0], served.accel
    out = []
    for start in range(0, len(images), BATCH):
        batch = accel.batch(served.data.normalize(images[start : start + BATCH].to(accel.device)))
        with accel.autocast():
            features = backbone(batch).float()
        out.append(features.flatten(start_dim=1).cpu())
    return torch.cat(out).numpy()


def validation_embeddings(
    store: Store, serving: ServingTrial, max_points: int = MAX_POINTS, seed: int = 0
) -> Embeddings:
    """Embeds (a subsample of) the validation images of ``serving``'s trial with its model.

    Raises:
        WeightsNotFoundError: If the trial kept no weights.
        ModelUnavailableError: If the model cannot be rebuilt, its dataset loaded, or it has
            too few validation images.
    """
    served = load_serving_model(store, serving)
    decoded = recorded_decoded_bytes(serving.trial.user_attrs.get(attrs.DATA))
    if decoded is not None and decoded > MAX_DECODED_BYTES:
        raise ModelUnavailableError(
            f"the trial's dataset is {decoded / 2**20:,.0f} MiB decoded; embeddings are made "
            f"for datasets up to {MAX_DECODED_BYTES // 2**20} MiB (every split is decoded to "
            "draw the validation images)"
        )
    # Serving needs only what the trial recorded; embeddings need its validation images.
    try:
        config = stored_config(serving.trial.user_attrs[attrs.CONFIG])
        data = load_dataset(config.dataset.source, config.dataset.options)
    except (ValidationError, DatasetError) as exc:
        message = f"embeddings need the trial's validation images: {error_text(exc)}"
        raise ModelUnavailableError(message) from None
    if tuple(data.classes) != served.classes or data.input_shape != served.data.input_shape:
        raise ModelUnavailableError(
            "the trial's dataset changed since it trained (classes or image shape): its "
            "validation images are no longer the ones the model knows"
        )
    total = len(data.val_y)
    if total < MIN_POINTS:
        raise ModelUnavailableError(
            f"the validation split has {total} images; embeddings need at least {MIN_POINTS}"
        )
    index = torch.from_numpy(subsample(total, max_points, seed))
    features = backbone_features(served, data.val_x[index])
    labels = data.val_y[index].numpy().astype(np.int64)
    return Embeddings(features, labels, tuple(data.classes), total)


def recorded_decoded_bytes(record: Any) -> int | None:
    """A dataset's decoded size from what a trial recorded of it (``automl.data``: images
    per split and one sample's shape); None where it recorded neither."""
    try:
        images = sum(int(count) for count in record["images"].values())
        sample = math.prod(int(size) for size in record["shape"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return images * sample if record["shape"] else None


def distinct_points(features: np.ndarray, stop_at: int | None = None) -> int:
    """How many distinct points the rows of finite ``features`` are.

    A row counts as a new point unless every one of its features lies within
    ``RELATIVE_TOLERANCE * max(abs(features))`` of those of a point already counted (so
    rows of zeros are all one point). Counting stops at ``stop_at`` points, if given.
    """
    if len(features) == 0:
        return 0
    values = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    tolerance = float(np.abs(values).max()) * RELATIVE_TOLERANCE
    limit = len(values) if stop_at is None else min(stop_at, len(values))
    points = np.empty((limit, values.shape[1]))
    count = 0
    for row in values:
        if count and (np.abs(points[:count] - row).max(axis=1) <= tolerance).any():
            continue
        points[count] = row
        count += 1
        if count == limit:
            break
    return count


def check_projectable(features: np.ndarray) -> None:
    """Checks that ``features`` ``(N, D)`` can be projected to two dimensions.

    Raises:
        DegenerateEmbeddingsError: If any feature is NaN or infinite, or fewer than
            ``MIN_POINTS`` rows are distinct (see ``distinct_points``).
    """
    count = len(features)
    if not np.isfinite(features).all():
        raise DegenerateEmbeddingsError(
            f"The model's features of the {count} validation images contain NaN or infinite"
            " values: nothing to project."
        )
    distinct = distinct_points(features, stop_at=MIN_POINTS)
    if distinct < MIN_POINTS:
        same = "the same features" if distinct == 1 else f"only {distinct} distinct features"
        raise DegenerateEmbeddingsError(
            f"The model maps the {count} validation images to {same} (up to float rounding);"
            f" a projection needs at least {MIN_POINTS} distinct points."
        )


def pca_2d(features: np.ndarray) -> np.ndarray:
    """The first two principal components of ``features``, ``(N, 2)`` (zero-padded if the
    features have a single dimension).

    Raises:
        DegenerateEmbeddingsError: If ``check_projectable`` refuses the features.
    """
    check_projectable(features)
    components = min(2, features.shape[1], len(features))
    projected = PCA(n_components=components).fit_transform(features)
    if components < 2:
        projected = np.pad(projected, ((0, 0), (0, 2 - components)))
    return projected


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE of ``features``, ``(N, 2)``; perplexity adapted to the number of points.

    The features are centered and scaled to a largest absolute value of 1 first (t-SNE does
    not depend on their scale), so that tiny or huge features neither underflow nor overflow
    in scikit-learn (features around 1e-30 crashed its PCA initialization as well).

    Raises:
        DegenerateEmbeddingsError: If ``check_projectable`` refuses the features: t-SNE must
            never see them, it crashes the process on identical points.
    """
    check_projectable(features)
    centered = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    centered = centered - centered.mean(axis=0)
    features = centered / np.abs(centered).max()
    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3)))
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca" if features.shape[1] >= 2 else "random",
        learning_rate="auto",
        max_iter=500,
        random_state=seed,
    )
    return tsne.fit_transform(features)


__all__ = [
    "MAX_POINTS",
    "MIN_POINTS",
    "DegenerateEmbeddingsError",
    "Embeddings",
    "backbone_features",
    "check_projectable",
    "distinct_points",
    "pca_2d",
    "subsample",
    "tsne_2d",
    "validation_embeddings",
]

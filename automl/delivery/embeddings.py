"""Penultimate-layer embeddings of validation images, and their 2-D projections.

Every model is ``nn.Sequential(backbone, head)`` (``automl.models.base``): the backbone's
output, the head's input, is the penultimate layer. ``validation_embeddings`` runs a
subsample of the trial's validation split through the backbone of its (cached) serving
model; ``pca_2d`` and ``tsne_2d`` flatten those features to two dimensions for a plot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from torch import nn

from automl.data import load_dataset
from automl.delivery.inference import (
    ModelUnavailableError,
    ServingModel,
    ServingTrial,
    load_serving_model,
)
from automl.store import Store, attrs
from automl.train.trial_config import TrialConfig

MAX_POINTS = 500
"""Validation images embedded at most: t-SNE then takes a few seconds on a CPU."""

MIN_POINTS = 5
"""Fewer validation images than this give no meaningful projection."""

BATCH = 256


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
    config = TrialConfig.model_validate(serving.trial.user_attrs[attrs.CONFIG])
    # load_serving_model just loaded the same dataset, so this cannot newly fail.
    data = load_dataset(config.dataset.source, config.dataset.options)
    total = len(data.val_y)
    if total < MIN_POINTS:
        raise ModelUnavailableError(
            f"the validation split has {total} images; embeddings need at least {MIN_POINTS}"
        )
    index = torch.from_numpy(subsample(total, max_points, seed))
    features = backbone_features(served, data.val_x[index])
    labels = data.val_y[index].numpy().astype(np.int64)
    return Embeddings(features, labels, tuple(data.classes), total)


def pca_2d(features: np.ndarray) -> np.ndarray:
    """The first two principal components of ``features``, ``(N, 2)`` (zero-padded if the
    features have a single dimension)."""
    components = min(2, features.shape[1], len(features))
    projected = PCA(n_components=components).fit_transform(features)
    if components < 2:
        projected = np.pad(projected, ((0, 0), (0, 2 - components)))
    return projected


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE of ``features``, ``(N, 2)``; perplexity adapted to the number of points."""
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
    "Embeddings",
    "backbone_features",
    "pca_2d",
    "subsample",
    "tsne_2d",
    "validation_embeddings",
]

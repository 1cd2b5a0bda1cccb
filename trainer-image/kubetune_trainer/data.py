"""Datasets that need no download, the seeded split, and train-only feature engineering.

`load_dataset` returns raw samples; `prepare_data` splits them (fixed by
`data_seed`) and fits every transformation on the training rows only:
standardisation, then recursive feature elimination, then PCA. Image datasets
keep their (channels, height, width) shape unless RFE or PCA turn them into
plain feature vectors.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_breast_cancer, load_digits, load_wine, make_classification
from sklearn.decomposition import PCA
from sklearn.feature_selection import RFE
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from kubetune_trainer.config import ConfigError, TrainerConfig

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
LabelArray = npt.NDArray[np.int64]
ImageShape = tuple[int, int, int]


@dataclass(frozen=True)
class RawDataset:
    """Samples as rows of features, integer labels 0..n_classes-1, and the image shape if any."""

    name: str
    features: npt.NDArray[np.float64]
    labels: LabelArray
    n_classes: int
    image_shape: ImageShape | None = None


@dataclass(frozen=True)
class PreparedData:
    """Split and transformed data, ready for a model.

    `x_*` have shape (n, *input_shape); `background` is the transformed value
    of a raw 0 (the blank pixel), which augmentation uses as fill.
    """

    name: str
    x_train: FloatArray
    y_train: LabelArray
    x_val: FloatArray
    y_val: LabelArray
    n_classes: int
    image_shape: ImageShape | None
    background: float
    selected_features: tuple[int, ...] | None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)


def load_dataset(config: TrainerConfig) -> RawDataset:
    """The dataset named by `config.dataset`."""
    if config.csv_path is not None:
        return load_csv(config.csv_path, config.label_column)
    if config.dataset == "digits":
        x, y = load_digits(return_X_y=True)
        return RawDataset("digits", np.asarray(x, np.float64), np.asarray(y, np.int64), 10, (1, 8, 8))
    if config.dataset == "breast_cancer":
        x, y = load_breast_cancer(return_X_y=True)
        return RawDataset("breast_cancer", np.asarray(x, np.float64), np.asarray(y, np.int64), 2)
    if config.dataset == "wine":
        x, y = load_wine(return_X_y=True)
        return RawDataset("wine", np.asarray(x, np.float64), np.asarray(y, np.int64), 3)
    if config.dataset == "synthetic":
        return make_synthetic(config.n_samples, config.n_features, config.n_classes, config.data_seed)
    raise ConfigError("dataset", f"unknown value {config.dataset!r}")  # unreachable: config validated


def make_synthetic(n_samples: int, n_features: int, n_classes: int, seed: int) -> RawDataset:
    """A seeded classification problem; the first `n_informative` columns carry the signal.

    n_informative is half the features, but at least enough for one cluster per
    class (2**n_informative >= n_classes).
    """
    needed = max(1, math.ceil(math.log2(n_classes)))
    if needed > n_features:
        raise ConfigError("n_features", f"{n_classes} classes need at least {needed} features, got {n_features}")
    n_informative = min(n_features, max(needed, n_features // 2))
    x, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        n_redundant=0,
        n_repeated=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        shuffle=False,
        random_state=seed,
    )
    return RawDataset("synthetic", np.asarray(x, np.float64), np.asarray(y, np.int64), n_classes)


def load_csv(path: str, label_column: str) -> RawDataset:
    """A CSV file with a header row: `label_column` holds the class, every other column a number.

    Labels may be any strings; classes are numbered in sorted order (numerically
    when every label is a number).
    """
    if not os.path.isfile(path):
        raise ConfigError("dataset", f"CSV file not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ConfigError("dataset", f"CSV file is empty: {path}")
        header = [name.strip() for name in header]
        if label_column not in header:
            raise ConfigError("label_column", f"column {label_column!r} not in {path} (columns: {', '.join(header)})")
        label_index = header.index(label_column)
        rows: list[list[float]] = []
        labels: list[str] = []
        for line_number, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ConfigError("dataset", f"{path}:{line_number}: expected {len(header)} columns, got {len(row)}")
            values: list[float] = []
            for column, cell in enumerate(row):
                if column == label_index:
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    raise ConfigError(
                        "dataset",
                        f"{path}:{line_number}: column {header[column]!r} is not a number: {cell!r}",
                    ) from None
                if not math.isfinite(value):
                    raise ConfigError("dataset", f"{path}:{line_number}: column {header[column]!r} is {cell!r}")
                values.append(value)
            rows.append(values)
            labels.append(row[label_index].strip())
    if len(header) < 2:
        raise ConfigError("dataset", f"{path} has no feature columns besides {label_column!r}")
    classes = _sorted_labels(set(labels))
    if len(classes) < 2:
        raise ConfigError("dataset", f"{path} needs at least 2 classes in {label_column!r}, found {len(classes)}")
    index = {label: i for i, label in enumerate(classes)}
    return RawDataset(
        name=f"csv:{os.path.basename(path)}",
        features=np.asarray(rows, np.float64),
        labels=np.asarray([index[label] for label in labels], np.int64),
        n_classes=len(classes),
    )


def _sorted_labels(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def split_indices(labels: LabelArray, val_fraction: float, seed: int) -> tuple[LabelArray, LabelArray]:
    """Train and validation row indices, stratified by class when every class has 2+ samples."""
    indices = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    n_val = math.ceil(val_fraction * len(labels))
    if n_val < 1 or len(labels) - n_val < 1:
        raise ConfigError("val_fraction", f"{val_fraction} leaves an empty split of {len(labels)} samples")
    if stratify is not None and n_val < len(counts[counts > 0]):
        stratify = None
    if stratify is None:
        log.warning("validation split is not stratified (some class is too rare)")
    train, val = train_test_split(indices, test_size=n_val, random_state=seed, stratify=stratify)
    return np.asarray(train, np.int64), np.asarray(val, np.int64)


def prepare_data(config: TrainerConfig, raw: RawDataset | None = None) -> PreparedData:
    """Split `raw` (default: `load_dataset(config)`) and fit the feature pipeline on train rows."""
    raw = raw if raw is not None else load_dataset(config)
    train_rows, val_rows = split_indices(raw.labels, config.val_fraction, config.data_seed)
    x_train, x_val = raw.features[train_rows], raw.features[val_rows]
    y_train, y_val = raw.labels[train_rows], raw.labels[val_rows]
    image_shape = raw.image_shape
    zero = np.zeros((1, raw.features.shape[1]))

    if config.standardize:
        if image_shape is not None:
            mean = float(x_train.mean())
            std = float(x_train.std()) or 1.0
            x_train, x_val, zero = (x_train - mean) / std, (x_val - mean) / std, (zero - mean) / std
        else:
            mean_vec = x_train.mean(axis=0)
            std_vec = x_train.std(axis=0)
            std_vec[std_vec == 0] = 1.0
            x_train, x_val = (x_train - mean_vec) / std_vec, (x_val - mean_vec) / std_vec

    selected: tuple[int, ...] | None = None
    if config.rfe_features:
        n_features = x_train.shape[1]
        if config.rfe_features > n_features:
            raise ConfigError("rfe_features", f"{config.rfe_features} exceeds the {n_features} input features")
        selector = RFE(
            LogisticRegression(max_iter=500),
            n_features_to_select=config.rfe_features,
            step=max(1, n_features // 10),
        )
        selector.fit(x_train, y_train)
        support = np.flatnonzero(selector.support_)
        selected = tuple(int(i) for i in support)
        x_train, x_val = x_train[:, support], x_val[:, support]
        image_shape = None
        log.info("RFE kept features %s", list(selected))

    if config.pca_components:
        limit = min(x_train.shape)
        if config.pca_components > limit:
            raise ConfigError(
                "pca_components",
                f"{config.pca_components} exceeds min(train samples, features) = {limit}",
            )
        pca = PCA(n_components=config.pca_components, random_state=config.data_seed)
        x_train = pca.fit_transform(x_train)
        x_val = pca.transform(x_val)
        image_shape = None
        log.info("PCA keeps %.1f%% of the variance", 100 * float(pca.explained_variance_ratio_.sum()))

    if image_shape is not None:
        x_train = x_train.reshape((-1, *image_shape))
        x_val = x_val.reshape((-1, *image_shape))
        background = float(zero.reshape(-1)[0])
    else:
        background = 0.0

    return PreparedData(
        name=raw.name,
        x_train=np.ascontiguousarray(x_train, np.float32),
        y_train=y_train,
        x_val=np.ascontiguousarray(x_val, np.float32),
        y_val=y_val,
        n_classes=raw.n_classes,
        image_shape=image_shape,
        background=background,
        selected_features=selected,
    )

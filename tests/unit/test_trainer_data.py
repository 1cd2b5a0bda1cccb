"""Datasets, the seeded split, and train-only feature engineering."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kubetune_trainer.config import ConfigError, TrainerConfig
from kubetune_trainer.data import load_dataset, prepare_data, split_indices


@pytest.mark.parametrize(
    ("dataset", "shape", "classes"),
    [
        ("digits", (1, 8, 8), 10),
        ("breast_cancer", (30,), 2),
        ("wine", (13,), 3),
        ("synthetic", (20,), 3),
    ],
)
def test_builtin_datasets(dataset: str, shape: tuple[int, ...], classes: int) -> None:
    data = prepare_data(TrainerConfig(dataset=dataset))
    assert data.input_shape == shape
    assert data.n_classes == classes
    assert set(np.unique(data.y_train)) == set(range(classes))
    assert data.x_train.dtype == np.float32


def test_synthetic_is_configurable_and_seeded() -> None:
    config = TrainerConfig(dataset="synthetic", n_samples=300, n_features=7, n_classes=4, data_seed=3)
    first, again = load_dataset(config), load_dataset(config)
    assert first.features.shape == (300, 7) and first.n_classes == 4
    np.testing.assert_array_equal(first.features, again.features)
    other = load_dataset(replace(config, data_seed=4))
    assert not np.array_equal(first.features, other.features)


def test_split_is_fixed_by_data_seed_not_seed() -> None:
    base = TrainerConfig(val_fraction=0.25)
    a = prepare_data(base)
    b = prepare_data(replace(base, seed=99))  # tuning `seed` keeps the validation set
    np.testing.assert_array_equal(a.x_val, b.x_val)
    c = prepare_data(replace(base, data_seed=1))
    assert not np.array_equal(a.x_val, c.x_val)
    assert len(a.y_val) == math.ceil(0.25 * 1797)


def test_split_is_stratified() -> None:
    labels = np.repeat(np.arange(4), 50)
    _, val = split_indices(labels, 0.2, seed=0)
    assert np.bincount(labels[val]).tolist() == [10, 10, 10, 10]


def test_standardize_is_on_by_default_and_uses_train_statistics() -> None:
    tabular = prepare_data(TrainerConfig(dataset="wine"))
    np.testing.assert_allclose(tabular.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(tabular.x_train.std(axis=0), 1, atol=1e-4)
    raw = prepare_data(TrainerConfig(dataset="wine", standardize=False))
    assert raw.x_train.mean() > 10
    images = prepare_data(TrainerConfig(dataset="digits"))
    assert abs(float(images.x_train.mean())) < 1e-4  # one mean/std for the whole image
    assert images.background == pytest.approx(float(images.x_train.min()))  # blank pixel


def test_pca_reduces_input_dimensions() -> None:
    data = prepare_data(TrainerConfig(dataset="digits", pca_components=12))
    assert data.input_shape == (12,) and data.x_val.shape[1] == 12
    assert data.image_shape is None
    with pytest.raises(ConfigError, match="pca_components"):
        prepare_data(TrainerConfig(dataset="wine", pca_components=14))


def test_rfe_keeps_k_informative_features() -> None:
    # synthetic data keeps its informative features first (half of them: 0..5 here).
    config = TrainerConfig(dataset="synthetic", n_features=12, n_classes=3, n_samples=600, rfe_features=6)
    data = prepare_data(config)
    assert data.input_shape == (6,)
    assert data.selected_features is not None and len(data.selected_features) == 6
    assert len(set(data.selected_features) & set(range(6))) >= 5
    with pytest.raises(ConfigError, match="rfe_features"):
        prepare_data(replace(config, rfe_features=13))


@pytest.mark.parametrize("knobs", [{}, {"pca_components": 5}, {"rfe_features": 4}, {"standardize": False}])
def test_feature_pipeline_is_fit_on_training_rows_only(knobs: dict[str, int | bool]) -> None:
    config = TrainerConfig(dataset="wine", **knobs)  # type: ignore[arg-type]
    raw = load_dataset(config)
    _, val_rows = split_indices(raw.labels, config.val_fraction, config.data_seed)
    poisoned = raw.features.copy()
    poisoned[val_rows] = 1e6  # validation rows must not influence any fitted statistic
    clean = prepare_data(config, raw)
    dirty = prepare_data(config, replace(raw, features=poisoned))
    np.testing.assert_array_equal(clean.x_train, dirty.x_train)
    assert clean.selected_features == dirty.selected_features


def write_csv(path: Path, text: str) -> str:
    path.write_text(text)
    return f"csv:{path}"


def test_csv_dataset(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i % 3 * 2.5},{'cat' if i % 2 else 'dog'}" for i in range(40))
    dataset = write_csv(tmp_path / "pets.csv", "weight,height,species\n" + rows + "\n")
    data = prepare_data(TrainerConfig(dataset=dataset, label_column="species", val_fraction=0.25))
    assert data.input_shape == (2,) and data.n_classes == 2
    assert len(data.y_train) == 30 and len(data.y_val) == 10


@pytest.mark.parametrize(
    ("text", "knob", "fragment"),
    [
        (None, "dataset", "CSV file not found"),
        ("a,b\n1,2\n", "label_column", "'label' not in"),
        ("a,label\n1,x\nfoo,y\n", "dataset", "not a number"),
        ("a,label\n1,x\n2\n", "dataset", "expected 2 columns"),
        ("a,label\n1,x\n2,x\n", "dataset", "at least 2 classes"),
    ],
)
def test_csv_errors_name_the_knob(tmp_path: Path, text: str | None, knob: str, fragment: str) -> None:
    path = tmp_path / "data.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_dataset(TrainerConfig(dataset=f"csv:{path}"))
    assert error.value.knob == knob and fragment in str(error.value)

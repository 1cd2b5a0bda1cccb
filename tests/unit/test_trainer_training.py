"""The training loop: every knob changes behaviour the way the README says."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import cache

import pytest
import torch
from torch import nn

from kubetune_trainer.augment import Augmenter
from kubetune_trainer.config import ConfigError, TrainerConfig
from kubetune_trainer.data import PreparedData, prepare_data
from kubetune_trainer.models import build_model
from kubetune_trainer.optim import lr_at_epoch
from kubetune_trainer.training import EpochMetrics, TrainingOutcome, resolve_device, train

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest and avoids oversubscription
    yield
    torch.set_num_threads(previous)


@cache
def data_for(config: TrainerConfig) -> PreparedData:
    return prepare_data(config)


DATA_KNOBS = (
    "dataset",
    "val_fraction",
    "data_seed",
    "n_samples",
    "n_features",
    "n_classes",
    "standardize",
    "pca_components",
    "rfe_features",
)


def run(**knobs: object) -> TrainingOutcome:
    """Train with `knobs` on CPU; prepared data is shared between tests with the same data knobs."""
    config = TrainerConfig(**knobs)  # type: ignore[arg-type]
    data_config = TrainerConfig(**{name: getattr(config, name) for name in DATA_KNOBS})
    return train(config, data_for(data_config), device=CPU)


def weight_l1(model: nn.Module) -> float:
    return float(sum(p.detach().abs().sum() for p in model.parameters() if p.dim() > 1))


def test_digits_mlp_reaches_95_percent_within_20_epochs_with_defaults() -> None:
    outcome = run(epochs=15)
    assert outcome.status == "completed"
    assert outcome.history[-1].val_accuracy >= 0.95


def test_cnn_learns_digits() -> None:
    outcome = run(model="cnn", channels=8, epochs=4)
    assert isinstance(outcome.model, nn.Module)
    assert outcome.history[-1].val_accuracy > 0.85
    assert any(isinstance(m, nn.Conv2d) for m in outcome.model.modules())


def test_same_seed_same_run_other_seed_other_run() -> None:
    a, b, c = run(epochs=2), run(epochs=2), run(epochs=2, seed=1)
    assert [m.val_loss for m in a.history] == [m.val_loss for m in b.history]
    assert [m.val_loss for m in a.history] != [m.val_loss for m in c.history]


def test_epoch_metrics_follow_the_contract() -> None:
    seen: list[EpochMetrics] = []
    outcome = train(TrainerConfig(epochs=3), data_for(TrainerConfig()), device=CPU, on_epoch=seen.append)
    assert [m.epoch for m in seen] == [1, 2, 3] and seen == outcome.history
    assert set(seen[0].as_dict()) == {
        "train_loss",
        "val_loss",
        "val_accuracy",
        "lr",
        "samples_per_second",
        "epoch_seconds",
    }  # gpu_memory_bytes only on CUDA
    assert all(m.samples_per_second > 0 and m.epoch_seconds > 0 for m in seen)


def test_dropout_changes_training() -> None:
    plain, dropped = run(epochs=2), run(epochs=2, dropout=0.5)
    assert plain.history[-1].train_loss != pytest.approx(dropped.history[-1].train_loss, rel=1e-3)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in dropped.model.modules())


def test_mlp_depth_width_and_activation() -> None:
    model = build_model(TrainerConfig(hidden_layers=3, hidden_units=17, activation="tanh"), (64,), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [lin.out_features for lin in linears] == [17, 17, 17, 10]
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 3
    logistic = build_model(TrainerConfig(model="logistic", hidden_layers=5), (64,), 10)
    assert len([m for m in logistic.modules() if isinstance(m, nn.Linear)]) == 1  # knob ignored
    with pytest.raises(ConfigError, match="cnn needs image data"):
        build_model(TrainerConfig(model="cnn"), (64,), 10)


def test_step_schedule_decays_at_the_right_epoch() -> None:
    config = TrainerConfig(lr=0.1, lr_schedule="step", step_size=3, gamma=0.5, epochs=7)
    assert [lr_at_epoch(config, e) for e in range(1, 8)] == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025])


def test_step_schedule_is_applied_to_the_optimizer() -> None:
    # gamma ~ 0 after epoch 2 freezes the weights: the schedule really reaches the optimiser.
    config = TrainerConfig(lr_schedule="step", step_size=2, gamma=1e-12, epochs=4)
    model = build_model(config, (1, 8, 8), 10)
    snapshots: list[torch.Tensor] = []

    def snapshot(_: EpochMetrics) -> None:
        snapshots.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))

    outcome = train(config, data_for(TrainerConfig()), device=CPU, on_epoch=snapshot, model=model)
    assert [m.lr for m in outcome.history] == pytest.approx([1e-3, 1e-3, 1e-15, 1e-15])
    assert not torch.allclose(snapshots[0], snapshots[1])
    assert torch.allclose(snapshots[1], snapshots[3], atol=1e-9)


def test_cosine_anneals_to_about_zero() -> None:
    config = TrainerConfig(lr=0.1, lr_schedule="cosine", epochs=50)
    lrs = [lr_at_epoch(config, e) for e in range(1, 51)]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[25] == pytest.approx(0.05)  # half-way
    assert lrs[-1] < 0.001  # < 1% of the peak
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_warmup_ramps_then_follows_the_schedule() -> None:
    config = TrainerConfig(lr=0.4, warmup_epochs=4, lr_schedule="cosine", epochs=14)
    lrs = [lr_at_epoch(config, e) for e in range(1, 15)]
    assert lrs[:5] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])
    assert lrs[-1] < 0.02
    outcome = run(lr=0.004, warmup_epochs=2, epochs=3)
    assert [m.lr for m in outcome.history] == pytest.approx([0.002, 0.004, 0.004])


def test_early_stopping_stops_before_the_last_epoch() -> None:
    # With min_delta = 10 no epoch after the first counts as an improvement.
    outcome = run(epochs=30, patience=2, min_delta=10.0)
    assert outcome.status == "completed"
    assert outcome.epochs_completed == 3
    assert "early stopping" in outcome.reason
    patient = run(epochs=6, patience=2, early_stopping_metric="val_accuracy")
    assert patient.epochs_completed == 6  # accuracy still improving on digits


def test_l1_shrinks_weights() -> None:
    plain = run(model="logistic", epochs=10)
    sparse = run(model="logistic", epochs=10, l1=1e-2)
    assert weight_l1(sparse.model) < 0.8 * weight_l1(plain.model)

    def near_zero(model: nn.Module) -> int:
        return sum(int((p.detach().abs() < 1e-2).sum()) for p in model.parameters() if p.dim() > 1)

    assert near_zero(sparse.model) > 3 * near_zero(plain.model)


def test_weight_decay_shrinks_weights() -> None:
    plain = run(model="logistic", optimizer="adamw", epochs=5)
    decayed = run(model="logistic", optimizer="adamw", epochs=5, weight_decay=5.0)
    assert weight_l1(decayed.model) < 0.8 * weight_l1(plain.model)


@pytest.mark.parametrize(
    "knobs",
    [
        {"optimizer": "sgd", "lr": 0.05},
        {"optimizer": "sgd", "lr": 0.05, "nesterov": True},
        {"optimizer": "sgd", "lr": 0.05, "momentum": 0.0},
        {"optimizer": "adam"},
        {"optimizer": "adamw", "weight_decay": 0.01},
        {"optimizer": "rmsprop"},
    ],
)
def test_each_optimizer_trains(knobs: dict[str, object]) -> None:
    outcome = run(epochs=3, **knobs)
    assert outcome.status == "completed"
    assert outcome.history[-1].train_loss < outcome.history[0].train_loss
    assert outcome.history[-1].val_accuracy > 0.8


def test_huge_lr_diverges_with_a_reason() -> None:
    outcome = run(optimizer="sgd", lr=1e6, epochs=5)
    assert outcome.status == "diverged"
    assert "diverged" in outcome.reason and "lr=1e+06" in outcome.reason
    assert outcome.epochs_completed < 5


def test_stop_request_ends_at_a_batch_boundary() -> None:
    stop = threading.Event()

    def stop_after_two(metrics: EpochMetrics) -> None:
        if metrics.epoch == 2:
            stop.set()

    outcome = train(TrainerConfig(epochs=50), data_for(TrainerConfig()), device=CPU, stop=stop, on_epoch=stop_after_two)
    assert outcome.status == "stopped" and outcome.epochs_completed == 2


class RecordingModel(nn.Module):
    """Wraps a model and records every input batch, tagged train or eval."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.inputs: list[tuple[bool, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append((self.training, x.detach().clone()))
        out: torch.Tensor = self.inner(x)
        return out


def rows_found(batch: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """For each sample of `batch`, whether it equals some sample of `pool`."""
    flat_batch, flat_pool = batch.flatten(1), pool.flatten(1)
    distances = torch.cdist(flat_batch, flat_pool, compute_mode="donot_use_mm_for_euclid_dist")
    return distances.min(dim=1).values < 1e-5


@pytest.mark.parametrize("augment", ["", "noise", "shift,rotate"])
def test_augmentation_touches_training_batches_only(augment: str) -> None:
    config = TrainerConfig(epochs=1, augment=augment, augment_strength=1.0, augment_prob=1.0)
    data = data_for(TrainerConfig())
    model = RecordingModel(build_model(config, data.input_shape, data.n_classes))
    train(config, data, device=CPU, model=model)
    x_train, x_val = torch.from_numpy(data.x_train), torch.from_numpy(data.x_val)
    train_batches = torch.cat([x for training, x in model.inputs if training])
    eval_batches = torch.cat([x for training, x in model.inputs if not training])
    assert bool(rows_found(eval_batches, x_val).all())  # validation data is never augmented
    unchanged = rows_found(train_batches, x_train).float().mean().item()
    if augment:
        assert unchanged < 0.2
    else:
        assert unchanged == 1.0


def test_augmentation_is_ignored_for_tabular_data(caplog: pytest.LogCaptureFixture) -> None:
    outcome = run(dataset="wine", augment="noise,flip", epochs=2)
    assert outcome.status == "completed"
    assert "ignored" in caplog.text


def make_augmenter(ops: str, strength: float = 1.0, prob: float = 1.0, seed: int = 0) -> Augmenter:
    ops_set = TrainerConfig(augment=ops).augmentations
    return Augmenter(ops_set, strength, prob, (1, 8, 8), -1.0, torch.Generator().manual_seed(seed))


def test_shift_moves_whole_pixels_and_fills_background() -> None:
    image = torch.full((1, 1, 8, 8), -1.0)
    image[0, 0, 3, 4] = 5.0
    shifted = make_augmenter("shift")(image.repeat(64, 1, 1, 1))
    for sample in shifted:
        assert torch.isclose(sample, torch.tensor(5.0), atol=1e-4).sum() == 1  # the dot moved intact
        assert torch.isclose(sample, torch.tensor(-1.0), atol=1e-4).sum() == 63  # background elsewhere
        row, col = divmod(int(sample.argmax()), 8)
        assert abs(row - 3) <= 2 and abs(col - 4) <= 2  # at most 25% of 8 px
    assert len({int(s.argmax()) for s in shifted}) > 5


def test_flip_mirrors_and_noise_perturbs() -> None:
    image = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    torch.testing.assert_close(make_augmenter("flip")(image), image.flip(-1))
    noisy = make_augmenter("noise")(image.repeat(256, 1, 1, 1)) - image
    assert noisy.std().item() == pytest.approx(0.5, rel=0.1)


def test_rotation_is_bounded_by_strength() -> None:
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, :, 3:5] = 1.0  # a vertical bar
    slight = make_augmenter("rotate", strength=0.1)(image.repeat(16, 1, 1, 1))
    strong = make_augmenter("rotate", strength=1.0)(image.repeat(16, 1, 1, 1))
    change_slight = (slight - image).abs().mean().item()
    change_strong = (strong - image).abs().mean().item()
    assert 0 < change_slight < change_strong


def test_probability_and_strength_zero_are_identity() -> None:
    images = torch.randn(32, 1, 8, 8)
    torch.testing.assert_close(make_augmenter("shift,rotate,flip,noise", prob=0.0)(images), images)
    torch.testing.assert_close(make_augmenter("shift,rotate,noise", strength=0.0)(images), images)
    half = make_augmenter("flip", prob=0.5)(images)
    flipped = sum(bool(torch.equal(a, b.flip(-1))) for a, b in zip(half, images, strict=True))
    assert 4 < flipped < 28


def test_amp_is_ignored_on_cpu() -> None:
    outcome = run(amp=True, epochs=1)
    assert outcome.status == "completed" and outcome.amp_dtype is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU

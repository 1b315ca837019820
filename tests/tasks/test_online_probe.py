"""SimCLR's online linear probe: trained on detached embeddings, so the SSL run is unchanged; its
labels come through the data module and its weights ride along in the checkpoint."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from ser_ssl.callbacks import patches_in_batch
from ser_ssl.data import SSLDataModule
from ser_ssl.tasks import SimCLR, load_pretrained
from ser_ssl.tasks.checkpoint import build_module
from tests.conftest import quiet_trainer

SMALL = {"class_path": "ser_ssl.models.VGGLike", "init_args": {"channels": [8, 16], "embed_dim": 32}}
CLIPS, N_MELS, FRAMES = 24, 16, 24


class LabelledViews(Dataset):
    """Fixed views and class indices (a few -1: clips without a single label)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.views = torch.randn(CLIPS, 2, 1, N_MELS, FRAMES, generator=g)
        self.targets = torch.arange(CLIPS) % 3
        self.targets[::5] = -1

    def __len__(self) -> int:
        return CLIPS

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"views": self.views[i], "target": self.targets[i]}


class Data(L.LightningDataModule):
    """Identical batches in identical order for every run; ``classes`` as SSLDataModule has them."""

    classes = ["a", "b", "c"]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(LabelledViews(), batch_size=8)


def fit(online_probe: bool, root, steps: int = 4, **kwargs) -> tuple[SimCLR, L.Trainer]:
    L.seed_everything(0)
    model = SimCLR(
        encoder=build_module(SMALL),
        mixback=None,  # the default augmentations stay: their draws must not change either
        proj_hidden_dim=16,
        proj_dim=8,
        n_mels=N_MELS,
        online_probe=online_probe,
        lr=0.05,
        **kwargs,
    )
    trainer = quiet_trainer(
        max_steps=steps,
        default_root_dir=root,
    )
    trainer.fit(model, datamodule=Data())
    return model, trainer


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_online_probe_learns_without_changing_the_ssl_run(optimizer, tmp_path):
    plain, _ = fit(False, tmp_path, optimizer=optimizer)
    probed, trainer = fit(True, tmp_path, optimizer=optimizer, online_probe_lr=0.1)
    assert plain.online_classifier is None
    state, probed_state = plain.state_dict(), probed.state_dict()
    assert set(probed_state) - set(state) == {"online_classifier.weight", "online_classifier.bias"}
    for key, value in state.items():  # encoder, head and normaliser: bit for bit
        assert torch.equal(value, probed_state[key]), key
    assert probed.hparams.online_probe_classes == 3 and probed.online_classifier.out_features == 3
    acc = trainer.callback_metrics["online/acc"]
    assert 0.0 <= float(acc) <= 1.0 and torch.isfinite(trainer.callback_metrics["online/loss"])
    peaks = {g["initial_lr"] for g in trainer.optimizers[0].param_groups}
    assert peaks == {0.05, 0.1}  # the probe's own rate (both decayed by the same cosine schedule)


def test_online_probe_step_ignores_unlabelled_clips_and_the_encoder():
    model = SimCLR(encoder=build_module(SMALL), n_mels=N_MELS, online_probe=True, online_probe_classes=3)
    x = torch.randn(4, 1, N_MELS, FRAMES, requires_grad=True)
    out = model.training_step({"x": x, "target": torch.tensor([-1, -1])}, 0)
    ssl_only = model.training_step({"x": x}, 0)
    assert torch.equal(out["loss"], ssl_only["loss"])  # nothing labelled: the probe adds 0
    assert patches_in_batch({"x": x, "target": torch.tensor([0, 1])}) == 4

    def encoder_grads(batch) -> list[torch.Tensor]:
        model.zero_grad()
        model.training_step(batch, 0)["loss"].backward()
        return [p.grad.clone() for p in model.encoder.parameters()]

    with_probe = encoder_grads({"x": x, "target": torch.tensor([0, 2])})
    assert model.online_classifier.weight.grad.abs().sum() > 0
    without = encoder_grads({"x": x})
    assert all(torch.equal(a, b) for a, b in zip(with_probe, without, strict=True))


def test_without_labels_the_probe_warns_and_stays_off(tmp_path):
    class Unlabelled(Data):
        classes: list[str] = []

    model = SimCLR(encoder=build_module(SMALL), n_mels=N_MELS, online_probe=True, mixback=None)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.warns(UserWarning, match="no classes"):
        trainer.fit(model, datamodule=Unlabelled())
    assert model.online_classifier is None and "online/acc" not in trainer.callback_metrics


def test_checkpoint_keeps_the_probe_and_still_gives_the_encoder(tmp_path):
    model, trainer = fit(True, tmp_path, steps=2)
    path = tmp_path / "probe.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert "online_classifier.weight" in ckpt["state_dict"]
    encoder, _ = load_pretrained(path)
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value), key
    restored = SimCLR.load_from_checkpoint(path, encoder=build_module(SMALL), weights_only=True)
    assert torch.equal(restored.online_classifier.weight, model.online_classifier.weight)


def test_ssl_data_module_gives_training_targets(tiny_data, tmp_path):
    cache = str(tmp_path / "cache")
    dm = SSLDataModule(manifest=str(tiny_data), cache_dir=cache, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert dm.num_classes == 12 and dm.classes == sorted(dm.classes)
    batch = next(iter(dm.train_dataloader()))
    assert batch["target"].dtype == torch.long and batch["target"].shape == (4,)
    expected = {dm.classes.index(dm.clips[i].label) for i in dm.split_indices("train")}
    assert set(batch["target"].tolist()) <= expected


def test_a_fit_with_a_data_module_says_nothing_about_the_views_hook(tiny_data, tmp_path):
    """The model's ``on_after_batch_transfer`` is the design, not a slip for Lightning to warn about."""
    from lightning.pytorch.trainer.connectors.data_connector import warning_cache

    dm = SSLDataModule(
        manifest=str(tiny_data), cache_dir=str(tmp_path / "cache"), batch_size=8, num_workers=0
    )
    model = SimCLR(encoder=build_module(SMALL), proj_hidden_dim=32, proj_dim=16)
    warning_cache.clear()  # Lightning warns once a process: a fit in an earlier test would hide it
    with warnings.catch_warnings(record=True) as caught:  # the filters as they are, not "always"
        quiet_trainer(max_steps=1, limit_val_batches=0).fit(model, datamodule=dm)
    assert not [w for w in caught if "on_after_batch_transfer" in str(w.message)]

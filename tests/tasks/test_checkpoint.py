import lightning as L
import pytest
import torch

from ser_ssl.data import SSLDataModule
from ser_ssl.models import VGGLike
from ser_ssl.tasks import SimCLR, load_pretrained
from ser_ssl.tasks.checkpoint import CheckpointError, _data_settings


def test_a_data_module_built_in_python_leaves_its_settings_readable_weights_only(tiny_data, tmp_path):
    dm = SSLDataModule(
        manifest=str(tiny_data), cache_dir=str(tmp_path / "cache"), batch_size=8, num_workers=0
    )
    # the data module built in Python holds its LogMelConfig as an object; it is saved as plain data
    model = SimCLR(encoder=VGGLike(channels=[4, 8], embed_dim=16), proj_hidden_dim=16, proj_dim=8)
    trainer = L.Trainer(
        max_steps=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path, accelerator="cpu"
    )
    trainer.fit(model, dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # no pickled objects in it
    assert _data_settings(ckpt) == (dm.features, dm.patch_frames)


def test_an_encoder_object_built_in_python_is_named_as_the_missing_piece(tiny_data, tmp_path):
    model = SimCLR(encoder=VGGLike(channels=[4, 8], embed_dim=16), proj_hidden_dim=16, proj_dim=8)
    trainer = L.Trainer(max_steps=0, logger=False, enable_progress_bar=False, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match="built in Python"):
        load_pretrained(tmp_path / "model.ckpt")


def test_compile_compiles_the_encoder_in_place_so_checkpoint_keys_stay(monkeypatch):
    calls = []
    monkeypatch.setattr(VGGLike, "compile", lambda self, *a, **k: calls.append(self))
    model = SimCLR(
        encoder=VGGLike(channels=[4, 8], embed_dim=16), proj_hidden_dim=16, proj_dim=8, compile=True
    )
    keys = set(model.state_dict())
    monkeypatch.setattr(type(model), "trainer", property(lambda self: None))
    model.setup("fit")
    model.setup("fit")  # a second stage does not compile twice
    assert calls == [model.encoder] and set(model.state_dict()) == keys


def test_loader_options_for_gpus_reach_the_data_loaders(tiny_data, tmp_path):
    dm = SSLDataModule(
        manifest=str(tiny_data),
        cache_dir=str(tmp_path),
        batch_size=8,
        num_workers=1,
        pin_memory=True,
        persistent_workers=True,
    )
    loader = dm._loader(list(range(8)), shuffle=False, batch_size=4)
    assert loader.pin_memory and loader.persistent_workers

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from ser_ssl.data import SSLDataModule
from ser_ssl.models import CRNN, PaperVGG, ResNet18, VGGLike, records_config
from ser_ssl.models.build import TRUST_ENV
from ser_ssl.models.config import recorded_config
from ser_ssl.tasks import LinearProbe, SimCLR, load_pretrained
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


def save_unfitted(model: SimCLR, path: Path) -> Path:
    trainer = L.Trainer(max_steps=0, logger=False, enable_progress_bar=False, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


class OwnEncoder(nn.Module):
    """An encoder class of the user's, unknown to ser-ssl."""

    def __init__(self, embed_dim: int = 16) -> None:
        super().__init__()
        self.net, self.embed_dim = nn.Conv2d(1, embed_dim, 3), embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(2, 3))


@pytest.mark.parametrize(
    ("encoder", "cls"),
    [
        (lambda: VGGLike(channels=(4, 8), embed_dim=16), VGGLike),
        (lambda: ResNet18(width=0.125), ResNet18),
        (lambda: CRNN(channels=[4, 8], time_pools=[2, 1], embed_dim=8), CRNN),
        (PaperVGG, PaperVGG),
        (lambda: SimCLR().encoder, VGGLike),  # the default, which jsonargparse builds lazily
    ],
)
def test_an_own_encoder_built_in_python_is_recorded_and_rebuilt(tmp_path, encoder, cls):
    model = SimCLR(encoder=encoder(), proj_hidden_dim=16, proj_dim=8)
    path = save_unfitted(model, tmp_path / "model.ckpt")
    rebuilt, _ = load_pretrained(path)
    assert type(rebuilt) is cls
    state = model.encoder.state_dict()
    assert rebuilt.state_dict().keys() == state.keys()
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in state.items())


def test_an_encoder_class_of_ones_own_built_in_python_is_named_as_the_missing_piece(tiny_data, tmp_path):
    model = SimCLR(encoder=OwnEncoder(), proj_hidden_dim=16, proj_dim=8)
    path = save_unfitted(model, tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match="built in Python.*pass the same network as --model.encoder"):
        load_pretrained(path)
    # ... and the same network given with the checkpoint gets its weights
    probe = LinearProbe(encoder_checkpoint=str(path), encoder=OwnEncoder())
    assert torch.equal(probe.encoder.net.weight, model.encoder.net.weight)
    with pytest.raises(CheckpointError, match="--model.encoder does not match"):
        LinearProbe(encoder_checkpoint=str(path), encoder=OwnEncoder(embed_dim=8))


@records_config
class RecordedEncoder(OwnEncoder):
    """The user's class, decorated so that checkpoints record it."""


def test_a_decorated_class_of_ones_own_is_recorded_and_built_only_when_trusted(tmp_path, monkeypatch):
    model = SimCLR(encoder=RecordedEncoder(embed_dim=8), proj_hidden_dim=16, proj_dim=8)
    path = save_unfitted(model, tmp_path / "model.ckpt")
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(CheckpointError, match=f"RecordedEncoder.*{TRUST_ENV}=1"):
        load_pretrained(path)
    monkeypatch.setenv(TRUST_ENV, "1")
    rebuilt, _ = load_pretrained(path)
    assert type(rebuilt) is RecordedEncoder and rebuilt.embed_dim == 8
    assert torch.equal(rebuilt.net.weight, model.encoder.net.weight)


def test_a_subclass_of_an_own_encoder_is_not_recorded_as_its_base(tmp_path):
    class Wider(VGGLike):
        def __init__(self) -> None:
            super().__init__(channels=[4, 8], embed_dim=16)
            self.extra = nn.Linear(16, 16)

    assert recorded_config(Wider()) is None  # rebuilding a VGGLike would lose `extra`
    assert recorded_config(VGGLike(channels=[4, 8], embed_dim=16)) == {
        "class_path": "ser_ssl.models.encoders.VGGLike",
        "init_args": {"channels": [4, 8], "embed_dim": 16},
    }


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

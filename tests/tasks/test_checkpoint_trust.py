"""A checkpoint names the class its encoder is built from; only ser-ssl's own encoders are built from it
unless SER_SSL_TRUST_CHECKPOINTS=1, and a refused class is never imported."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from ser_ssl.models import CRNN, LogMelStats, PaperCRNN, PaperResNet18, PaperVGG, ResNet18, VGGLike
from ser_ssl.models.build import OWN_ENCODERS, TRUST_ENV
from ser_ssl.tasks import load_pretrained
from ser_ssl.tasks.checkpoint import CheckpointError, read_pretrained
from ser_ssl.tasks.simclr import CHECKPOINT_KIND

EVIL = """
from pathlib import Path

from torch import nn

Path(__file__).with_name("imported.marker").write_text("the module's code ran")


class Evil(nn.Module):
    def __init__(self, embed_dim: int = 32) -> None:
        super().__init__()
        self.lin = nn.Linear(4, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x):
        return self.lin(x.mean(dim=(1, 2)))
"""


@pytest.fixture(autouse=True)
def untrusted(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A module on sys.path that leaves ``imported.marker`` when imported; returns the marker's path."""
    for name in ("evil_mod", "ser_ssl_evil"):
        (tmp_path / f"{name}.py").write_text(EVIL)
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "imported.marker"


def write_checkpoint(path, class_path, init_args, encoder_state):
    state = {f"encoder.{k}": v for k, v in encoder_state.items()}
    state |= {"normalizer.mean": torch.zeros(96), "normalizer.std": torch.ones(96)}
    spec = {"class_path": class_path, "init_args": init_args}
    torch.save(
        {"ser_ssl_kind": CHECKPOINT_KIND, "hyper_parameters": {"encoder": spec}, "state_dict": state}, path
    )
    return path


def vgg_checkpoint(path, class_path="ser_ssl.models.VGGLike", **init_args):
    encoder = VGGLike(channels=[8, 16], embed_dim=32)
    args = {"channels": [8, 16], "embed_dim": 32} | init_args
    return write_checkpoint(path, class_path, args, encoder.state_dict()), encoder


def test_the_allowed_classes_are_the_encoders_ser_ssl_models_exports():
    assert OWN_ENCODERS == {VGGLike, CRNN, ResNet18, LogMelStats, PaperVGG, PaperCRNN, PaperResNet18}


@pytest.mark.parametrize("class_path", ["ser_ssl.models.VGGLike", "ser_ssl.models.encoders.VGGLike"])
def test_a_ser_ssl_encoder_loads_under_either_spelling(tmp_path, class_path):
    path, original = vgg_checkpoint(tmp_path / "ok.ckpt", class_path)
    encoder, stats = load_pretrained(path)
    assert type(encoder) is VGGLike and encoder.embed_dim == 32 and set(stats) == {"mean", "std"}
    for key, value in original.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value)


@pytest.mark.parametrize(
    "class_path",
    [
        "collections.OrderedDict",
        "torch.nn.Linear",
        "evil_mod.Evil",
        "ser_ssl_evil.Evil",  # looks like ser_ssl, is not: no import either
        "no_such_module.Encoder",
        "ser_ssl.no_such_module.Encoder",
        "ser_ssl.models.ProjectionHead",  # ser-ssl's, but not an encoder
        "ser_ssl.models.encoders.BasicBlock",
        "VGGLike",
    ],
)
def test_another_class_is_refused_and_not_imported(tmp_path, evil, class_path):
    path = write_checkpoint(tmp_path / "evil.ckpt", class_path, {"embed_dim": 32}, {})
    with pytest.raises(CheckpointError) as err:
        read_pretrained(path)
    message = str(err.value)
    assert str(path) in message and repr(class_path) in message and f"{TRUST_ENV}=1" in message
    assert "only load checkpoints you trust: building another class runs its code" in message
    assert not evil.exists() and "evil_mod" not in sys.modules and "ser_ssl_evil" not in sys.modules


def test_the_opt_in_builds_a_foreign_encoder(tmp_path, evil, monkeypatch):
    weights = {f"lin.{k}": v for k, v in nn.Linear(4, 32).state_dict().items()}
    path = write_checkpoint(tmp_path / "evil.ckpt", "evil_mod.Evil", {"embed_dim": 32}, weights)
    monkeypatch.setenv(TRUST_ENV, "1")
    pretrained = read_pretrained(path)
    assert type(pretrained.encoder).__name__ == "Evil" and pretrained.encoder.embed_dim == 32
    assert torch.equal(pretrained.encoder.lin.weight, weights["lin.weight"])
    assert evil.exists()  # its code ran: the opt-in is the user's word that the file is trusted


@pytest.mark.parametrize(
    "init_args",
    [
        {"channels": {"class_path": "evil_mod.Evil", "init_args": {"embed_dim": 8}}},
        {"channels": [8, {"class_path": "evil_mod.Evil"}]},
        {"embed_dim": {"class_path": "os.system", "init_args": {"command": "true"}}},
    ],
)
def test_a_nested_class_path_in_the_settings_of_an_own_encoder_is_refused(tmp_path, evil, init_args):
    path, _ = vgg_checkpoint(tmp_path / "nested.ckpt", **init_args)
    with pytest.raises(CheckpointError, match="not plain numbers, strings or lists") as err:
        load_pretrained(path, load_weights=False)
    assert str(path) in str(err.value) and f"{TRUST_ENV}=1" in str(err.value)
    assert not evil.exists()


def test_settings_beside_init_args_are_refused(tmp_path):
    path, _ = vgg_checkpoint(tmp_path / "extra.ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["encoder"]["dict_kwargs"] = {"x": {"class_path": "os.system"}}
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="dict_kwargs"):
        read_pretrained(path)


def test_the_cli_refuses_a_foreign_encoder_checkpoint_in_one_line(tmp_path, evil, monkeypatch):
    from ser_ssl.cli import main

    path = write_checkpoint(tmp_path / "evil.ckpt", "evil_mod.Evil", {"embed_dim": 32}, {})
    argv = ["ser-ssl", "fit", "--config", "configs/probe.yaml"]
    argv += ["--model.init_args.encoder_checkpoint", str(path)]
    argv += ["--trainer.default_root_dir", str(tmp_path / "run"), "--wandb", "disabled"]
    argv += ["--data.init_args.cache_dir", str(tmp_path / "cache")]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    message = str(exit_info.value.code)
    assert message.startswith("ser-ssl: error:") and "'evil_mod.Evil'" in message and str(path) in message
    assert TRUST_ENV in message and "\n" not in message
    assert not evil.exists()

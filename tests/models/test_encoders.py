"""The encoder contract, checked for every encoder: shapes, size, gradients, modes, frames, CLI presets."""

import copy
import json

import pytest
import torch
from torch import nn

from ser_ssl.cli import cli_main
from ser_ssl.errors import ConfigError
from ser_ssl.models import CRNN, LogMelStats, ResNet18, VGGLike
from tests.conftest import tiny_args

# encoder class, expected parameter count ("about", within 15%), embedding size
ENCODERS = {"vgglike": (VGGLike, 0.3e6, 512), "resnet18": (ResNet18, 11e6, 512), "crnn": (CRNN, 1.0e6, 64)}


def small(name: str) -> nn.Module:
    """A narrow instance of the encoder, for the tests that run it in train mode."""
    if name == "vgglike":
        return VGGLike(channels=(8, 16), embed_dim=32)
    if name == "resnet18":
        return ResNet18(width=0.125)
    return CRNN(channels=(8, 16, 16), time_pools=(2, 1, 1), embed_dim=16)


@pytest.fixture(scope="module", params=list(ENCODERS))
def full(request) -> tuple[str, nn.Module]:
    """The default-size encoder, built once per module (ResNet-18 takes a moment to initialise)."""
    torch.manual_seed(0)
    return request.param, ENCODERS[request.param][0]().eval()


@pytest.mark.parametrize("shape", [(96, 101), (64, 50), (40, 16)])
def test_output_shape_for_any_patch_size(full, shape):
    name, enc = full
    with torch.no_grad():
        out = enc(torch.randn(2, 1, *shape))
    assert out.shape == (2, ENCODERS[name][2]) and enc.embed_dim == ENCODERS[name][2]
    assert torch.isfinite(out).all()


def test_parameter_count(full):
    name, enc = full
    n = sum(p.numel() for p in enc.parameters())
    assert 0.85 * ENCODERS[name][1] <= n <= 1.15 * ENCODERS[name][1]


def test_frames_shape_and_rate(full):
    name, enc = full
    with torch.no_grad():
        lengths = [enc.frames(torch.randn(2, 1, 48, t)).shape[2] for t in (16, 40, 101)]
        seq = enc.frames(torch.randn(2, 1, 48, 40))
    assert seq.shape[:2] == (2, enc.embed_dim)
    assert 1 <= lengths[0] < lengths[1] < lengths[2]


@pytest.mark.parametrize("name", list(ENCODERS))
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    enc = small(name)
    out = enc(torch.randn(3, 1, 32, 40))
    (out * torch.randn_like(out)).sum().backward()  # random weights: no gradient cancels by symmetry
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("name", list(ENCODERS))
def test_modes_differ_only_in_batchnorm(name):
    torch.manual_seed(0)
    enc = small(name)
    x = torch.randn(4, 1, 32, 40)
    with torch.no_grad():
        enc(x)  # one training-mode pass: BatchNorm running statistics move off their initial values
        enc.eval()
        ref = enc(x)
        stat = next(k for k in enc.state_dict() if k.endswith("running_mean"))
        assert torch.equal(enc(x), ref)  # deterministic
        assert torch.allclose(enc(x[:1]), ref[:1], atol=1e-5)  # a sample's output ignores its batch
        state = copy.deepcopy(enc.state_dict())
        enc.train()
        train_out = enc(x)
        assert not torch.allclose(enc(x[:2]), train_out[:2], atol=1e-3)  # batch statistics in training
        assert not torch.equal(enc.state_dict()[stat], state[stat])  # running statistics updated
        enc.load_state_dict(state)
        for m in enc.modules():  # training mode with only BatchNorm/dropout switched back: eval output
            if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.Dropout):
                m.eval()
        assert torch.allclose(enc(x), ref, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset, extra",
    [
        ("vgglike", ["--model.init_args.encoder.init_args.channels", "[8, 16]"]),
        ("resnet18", ["--model.init_args.encoder.init_args.width", "0.25"]),
        ("crnn", []),
    ],
)
def test_preset_pretrains_then_probes_through_the_cli(preset, extra, tiny_data, tmp_path):
    args = tiny_args("pretrain", tmp_path / "run", tiny_data, tmp_path / "cache")
    args[2:2] = ["--config", f"configs/encoders/{preset}.yaml"]  # layered right after the task config
    cli = cli_main(["fit", *args, *extra, "--trainer.max_steps", "1"])
    assert type(cli.model.encoder).__name__.lower() == preset
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()

    probe = tiny_args("probe", tmp_path / "probe", tiny_data, tmp_path / "cache")
    probe += ["--model.init_args.encoder_checkpoint", str(checkpoint), "--trainer.max_epochs", "1"]
    fit = cli_main(["fit", *probe, "--trainer.check_val_every_n_epoch", "1"])
    assert type(fit.model.encoder).__name__.lower() == preset  # rebuilt from the checkpoint alone
    assert fit.model.classifier[-1].in_features == cli.model.encoder.embed_dim
    cli_main(["test", *probe])
    metrics = json.loads((tmp_path / "probe" / "test_metrics.json").read_text())
    assert 0.0 <= metrics["test/bal_acc"] <= 1.0


def test_logmel_stats_are_band_means_and_stds_of_frames_and_differences():
    x = torch.randn(3, 1, 8, 20)
    out = LogMelStats(n_mels=8)(x)
    seq, delta = x[:, 0], x[:, 0].diff(dim=-1)
    expected = torch.cat(
        [seq.mean(-1), seq.std(-1, correction=0), delta.mean(-1), delta.std(-1, correction=0)], 1
    )
    assert out.shape == (3, 32) and torch.allclose(out, expected)
    assert torch.isfinite(LogMelStats(n_mels=8)(x[..., :1])).all()  # a one-frame patch has no difference
    with pytest.raises(ConfigError, match="n_mels=8"):
        LogMelStats(n_mels=8)(torch.randn(2, 1, 16, 20))

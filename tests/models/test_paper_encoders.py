"""The paper's encoders (ser_ssl.models.paper) against the architectures as published: shapes, parameter
counts worked out from the layer sizes, the CRNN's embedding, the ResNet's stem, one CLI step each."""

import pytest
import torch
from torch import nn

from ser_ssl.cli import cli_main
from ser_ssl.inference import frame_stride
from ser_ssl.models import PaperCRNN, PaperResNet18, PaperVGG
from ser_ssl.tasks import load_pretrained
from ser_ssl.tasks.simclr import CHECKPOINT_KIND
from tests.conftest import tiny_args


def conv(k: int, c_in: int, c_out: int) -> int:
    """Weights of a k x k convolution without bias (BatchNorm follows every convolution)."""
    return k * k * c_in * c_out


def bn(c: int) -> int:
    """A BatchNorm's weight and bias (its running statistics are buffers, not parameters)."""
    return 2 * c


def gru(n_in: int, hidden: int) -> int:
    """One direction of a GRU layer: three gates, each with input and hidden weights and two biases."""
    return 3 * (hidden * n_in + hidden * hidden + 2 * hidden)


def basic_block(c_in: int, c_out: int, stride: int = 1) -> int:
    """Two 3x3 convs with BatchNorm, plus a 1x1 conv with BatchNorm where the shape changes."""
    n = conv(3, c_in, c_out) + bn(c_out) + conv(3, c_out, c_out) + bn(c_out)
    if stride != 1 or c_in != c_out:
        n += conv(1, c_in, c_out) + bn(c_out)
    return n


VGG_PARAMS = (
    conv(3, 1, 32) + bn(32) + conv(3, 32, 32) + bn(32)  # block 1, then 2x2 max-pool
    + conv(3, 32, 32) + bn(32) + conv(3, 32, 64) + bn(64)  # block 2, then 2x2 max-pool
    + conv(3, 64, 64) + bn(64) + conv(3, 64, 128) + bn(128)  # block 3, then 2x2 max-pool
    + (2 * 128) * 512 + 512  # dense 512 on [max over time, mean over time] of 128 channels
)  # fmt: skip
CRNN_PARAMS = (
    conv(5, 1, 128) + bn(128) + conv(5, 128, 128) + bn(128) + conv(5, 128, 128) + bn(128)
    + 2 * gru(128, 64)  # bidirectional, 64 units per direction
)  # fmt: skip
RESNET_PARAMS = (
    conv(7, 1, 64) + bn(64)  # ImageNet stem (then 3x3 stride-2 max-pool)
    + basic_block(64, 64) + basic_block(64, 64)
    + basic_block(64, 128, 2) + basic_block(128, 128)
    + basic_block(128, 256, 2) + basic_block(256, 256)
    + basic_block(256, 512, 2) + basic_block(512, 512)
)  # fmt: skip

# class, parameters, embedding size, frame size, input frames per frame, frames of a 101-frame patch
PAPER = {
    "paper_vgg": (PaperVGG, VGG_PARAMS, 512, 128, 8, 13),
    "paper_crnn": (PaperCRNN, CRNN_PARAMS, 64, 128, 1, 101),
    "paper_resnet18": (PaperResNet18, RESNET_PARAMS, 512, 512, 32, 4),
}


def test_the_hand_counts_are_the_published_sizes():
    assert (VGG_PARAMS, CRNN_PARAMS, RESNET_PARAMS) == (280_032, 897_664, 11_170_240)
    # torchvision's resnet18: 11,689,512 with a 3-channel stem and a 1000-way classifier
    assert RESNET_PARAMS == 11_689_512 - conv(7, 3, 64) - (512 * 1000 + 1000) + conv(7, 1, 64)


@pytest.fixture(scope="module", params=list(PAPER))
def paper(request) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    return request.param, PAPER[request.param][0]().eval()


def test_shapes_and_parameter_count(paper):
    name, enc = paper
    _, params, dim, frame_dim, _, n_frames = PAPER[name]
    x = torch.randn(2, 1, 96, 101)
    with torch.no_grad():
        out, seq = enc(x), enc.frames(x)
    assert enc.embed_dim == dim and out.shape == (2, dim) and torch.isfinite(out).all()
    assert seq.shape == (2, frame_dim, n_frames) and torch.isfinite(seq).all()
    assert sum(p.numel() for p in enc.parameters()) == params


def test_frames_have_a_fixed_stride_for_timestamps(paper):
    name, enc = paper
    assert frame_stride(enc, 96, 101) == (PAPER[name][4], PAPER[name][3])


@pytest.mark.parametrize("shape", [(64, 50), (128, 40)])
def test_other_patch_sizes_work(paper, shape):
    name, enc = paper
    with torch.no_grad():
        assert enc(torch.randn(2, 1, *shape)).shape == (2, PAPER[name][2])


def test_vgg_layers():
    enc = PaperVGG()
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (1, 32), (32, 32), (32, 32), (32, 64), (64, 64), (64, 128)
    ]  # fmt: skip
    pools = [m for m in enc.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.kernel_size == (2, 2) for p in pools)
    assert [m.num_features for m in enc.modules() if isinstance(m, nn.BatchNorm2d)] == [
        c.out_channels for c in convs
    ]
    with torch.no_grad():  # the embedding is the dense layer on [max over time, mean over time]
        x = torch.randn(3, 1, 96, 101)
        seq = enc.eval().frames(x)
        expected = torch.relu(enc.dense[0](torch.cat([seq.amax(-1), seq.mean(-1)], 1)))
        assert torch.allclose(enc(x), expected)


def test_crnn_embedding_is_the_product_of_the_last_forward_and_backward_states():
    torch.manual_seed(0)
    enc = PaperCRNN().eval()
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 128, (5, 5))] + [
        (128, 128, (5, 5))
    ] * 2
    pools = [m.kernel_size for m in enc.modules() if isinstance(m, nn.MaxPool2d)]
    assert pools == [(6, 1), (4, 1), (4, 1)]  # frequency only: 96 -> 16 -> 4 -> 1
    assert enc.gru.bidirectional and enc.gru.hidden_size == 64 and enc.gru.num_layers == 1

    x = torch.randn(3, 1, 96, 30)
    reference = nn.GRU(128, 64, batch_first=True, bidirectional=True)
    reference.load_state_dict(enc.gru.state_dict())
    with torch.no_grad():
        assert enc.features(x).shape == (3, 128, 1, 30)  # frequency collapsed, time kept
        seq = enc.features(x)[:, :, 0].transpose(1, 2)
        out, h_n = reference(seq)
        forward_last, backward_last = out[:, -1, :64], out[:, 0, 64:]  # after the last / the first frame
        assert torch.allclose(forward_last, h_n[0]) and torch.allclose(backward_last, h_n[1])
        assert torch.allclose(enc(x), forward_last * backward_last, atol=1e-6)
        assert torch.allclose(enc.frames(x), out.transpose(1, 2), atol=1e-6)


def test_resnet_has_the_imagenet_stem():
    enc = PaperResNet18()
    stem_conv, stem_bn, _, stem_pool = enc.stem
    assert (stem_conv.in_channels, stem_conv.out_channels) == (1, 64)
    assert stem_conv.kernel_size == (7, 7) and stem_conv.stride == (2, 2) and stem_conv.padding == (3, 3)
    assert isinstance(stem_bn, nn.BatchNorm2d) and stem_bn.num_features == 64
    assert (stem_pool.kernel_size, stem_pool.stride, stem_pool.padding) == (3, 2, 1)
    widths = [[(b.conv1.in_channels, b.conv2.out_channels, b.conv1.stride[0]) for b in s] for s in enc.layers]
    assert widths == [
        [(64, 64, 1), (64, 64, 1)],
        [(64, 128, 2), (128, 128, 1)],
        [(128, 256, 2), (256, 256, 1)],
        [(256, 512, 2), (512, 512, 1)],
    ]
    with torch.no_grad():  # a 96x101 patch leaves a 3x4 grid, globally averaged
        x = torch.randn(2, 1, 96, 101)
        grid = enc.eval().layers(enc.stem(x))
        assert grid.shape == (2, 512, 3, 4) and torch.allclose(enc(x), grid.mean(dim=(2, 3)), atol=1e-6)


@pytest.mark.parametrize("name", list(PAPER))
def test_a_checkpoint_naming_a_paper_encoder_loads(tmp_path, monkeypatch, name):
    monkeypatch.delenv("SER_SSL_TRUST_CHECKPOINTS", raising=False)
    cls = PAPER[name][0]
    original = cls()
    state = {f"encoder.{k}": v for k, v in original.state_dict().items()}
    state |= {"normalizer.mean": torch.zeros(96), "normalizer.std": torch.ones(96)}
    spec = {"class_path": f"ser_ssl.models.{cls.__name__}", "init_args": {}}
    path = tmp_path / "paper.ckpt"
    ckpt = {"ser_ssl_kind": CHECKPOINT_KIND, "hyper_parameters": {"encoder": spec}, "state_dict": state}
    torch.save(ckpt, path)
    encoder, stats = load_pretrained(path)
    assert type(encoder) is cls and set(stats) == {"mean", "std"}
    for key, value in original.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value)


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PAPER))
def test_preset_trains_one_simclr_step_through_the_cli(preset, tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("SER_SSL_TRUST_CHECKPOINTS", raising=False)
    args = tiny_args("pretrain", tmp_path / "run", tiny_data, tmp_path / "cache")
    args[2:2] = ["--config", f"configs/encoders/{preset}.yaml"]  # layered right after the task config
    cli = cli_main(["fit", *args, "--trainer.max_steps", "1"])
    assert type(cli.model.encoder) is PAPER[preset][0]
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    encoder, _ = load_pretrained(tmp_path / "run" / "checkpoints" / "last.ckpt")  # allowed, untrusted
    assert type(encoder) is PAPER[preset][0]

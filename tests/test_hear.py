"""The HEAR 2021 API wrapper: attributes, shapes, the timestamp grid, the HEAR validator's checks,
batching and checkpoint errors."""

from __future__ import annotations

import importlib.util
import math
import sys
import types
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ser_ssl import hear
from ser_ssl.audio import LogMelConfig, Standardize
from ser_ssl.tasks.checkpoint import CheckpointError, build_module
from ser_ssl.tasks.simclr import CHECKPOINT_KIND

ENCODERS = {  # small, with the time strides of ser-ssl's encoders at their defaults
    "vgg": {"class_path": "ser_ssl.models.VGGLike", "init_args": {"channels": [8, 8, 8, 8], "embed_dim": 16}},
    "resnet": {"class_path": "ser_ssl.models.ResNet18", "init_args": {"width": 0.0625}},
    "crnn": {"class_path": "ser_ssl.models.CRNN", "init_args": {"channels": [8, 8, 8, 8], "embed_dim": 8}},
    "logmel": {"class_path": "ser_ssl.models.LogMelStats", "init_args": {}},
}
STRIDES = {"vgg": 16, "resnet": 16, "crnn": 4, "logmel": 1}
MS_PER_FRAME = 1000 * 220 / 22050  # the default log-mel's hop


def checkpoint(path: Path, spec: dict) -> Path:
    """A pretraining checkpoint as `ser-ssl fit` writes it (default log-mel, 101-frame patches), with
    random weights and statistics."""
    torch.manual_seed(0)
    encoder = build_module(spec)
    for module in encoder.modules():  # move BatchNorm statistics off their initial values
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state |= {"normalizer.mean": torch.randn(96, 1) - 4, "normalizer.std": torch.rand(96, 1) + 0.5}
    state["normalizer.fitted"] = torch.tensor(True)
    data = {"features": asdict(LogMelConfig()), "patch_frames": 101}
    torch.save(
        {
            "ser_ssl_kind": CHECKPOINT_KIND,
            "hyper_parameters": {"encoder": spec},
            "datamodule_hyper_parameters": data,
            "state_dict": state,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hear")
    return {name: checkpoint(root / f"{name}.ckpt", spec) for name, spec in ENCODERS.items()}


def noise(n_sounds: int, n_samples: int) -> torch.Tensor:
    """White noise in [-1, 1], as the HEAR validator feeds models."""
    return torch.rand(n_sounds, n_samples, generator=torch.Generator().manual_seed(0)) * 2 - 1


def hear_validator_checks(model_file_path: str) -> None:
    """The PyTorch checks of hearvalidator 2021.0.6 (``ValidateModel``), which pip installs only on
    Python < 3.9 and which imports TensorFlow; the regularity tolerance is 2021.0.2's (1e-3 ms, the
    one pip gives Python 3.10+). Its warnings (timestamps more than 50 ms apart, starting late, ending
    early) are failures here."""
    model = hear.load_model(model_file_path)
    assert isinstance(model, nn.Module)
    assert model.sample_rate in [16000, 22050, 32000, 44100, 48000]
    assert isinstance(model.scene_embedding_size, int) and isinstance(model.timestamp_embedding_size, int)
    for length in (1.07, 1.98, 4.0):
        audio = noise(2, int(length * model.sample_rate))
        embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
        assert embeddings.dtype == torch.float32
        embeddings, timestamps = embeddings.numpy(), timestamps.numpy()
        assert embeddings.ndim == 3 and timestamps.ndim == 2 and embeddings.shape[0] == 2
        assert embeddings.shape[:2] == timestamps.shape
        assert embeddings.shape[2] == model.timestamp_embedding_size
        assert timestamps.shape[1] > 1
        diff = np.diff(timestamps)
        avg = np.mean(diff)
        assert np.max(np.abs(diff - avg)) < 1e-3, "Timestamps should occur at regular intervals"
        assert np.max(diff) <= 50.0, "interval between timestamps above 50 ms"
        assert np.min(timestamps) <= avg, "timestamps begin late"
        assert np.max(timestamps) >= 1000 * length - min(avg, 50), "no embedding for the end of the audio"
        assert np.max(timestamps) <= 1000 * length, "timestamps past the end of the audio"
    scene = hear.get_scene_embeddings(noise(4, int(2.74 * model.sample_rate)), model).numpy()
    assert scene.dtype == np.float32 and scene.shape == (4, model.scene_embedding_size)


@pytest.mark.parametrize("name", ENCODERS)
def test_the_hear_validator_checks_pass(checkpoints, name):
    hear_validator_checks(str(checkpoints[name]))


def test_the_hear_validator_passes(checkpoints, monkeypatch):
    """hearvalidator itself, where installed (`pip install -e '.[hear]'`); without TensorFlow, which it
    imports but uses only for TensorFlow models, it runs on a stand-in module."""
    pytest.importorskip("hearvalidator")
    with monkeypatch.context() as m:
        if importlib.util.find_spec("tensorflow") is None:
            stub = types.ModuleType("tensorflow")
            stub.Module = type("Module", (), {})
            m.setitem(sys.modules, "tensorflow", stub)
            m.delitem(sys.modules, "hearvalidator.validate", raising=False)
        validate = importlib.import_module("hearvalidator.validate")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate.ValidateModel("ser_ssl.hear", str(checkpoints["vgg"]), device="cpu")()
    unwanted = ("50ms", "Your timestamps")
    assert not [w for w in caught if any(u in str(w.message) for u in unwanted)]


@pytest.mark.parametrize("name", ["vgg", "crnn"])
def test_timestamps_lie_on_one_grid_whatever_the_length(checkpoints, name):
    model = hear.load_model(str(checkpoints[name]))
    lengths = (300, 2047, 2048, 4410, 22050, 23593, 43659, 50_001, 88200, 100_003)
    stamps = {n: hear.get_timestamp_embeddings(noise(1, n), model)[1][0].double() for n in lengths}
    first_ms, hop_ms = float(stamps[88200][0]), float(stamps[88200][1] - stamps[88200][0])
    assert hop_ms == pytest.approx(4 * MS_PER_FRAME, abs=1e-3) and 0 <= first_ms < hop_ms
    for n_samples, t in stamps.items():
        k = torch.arange(len(t), dtype=torch.float64)
        torch.testing.assert_close(t, first_ms + k * hop_ms, atol=1e-3, rtol=0)
        duration = 1000 * n_samples / 22050
        if duration > first_ms:  # else one frame, at first_ms
            assert duration - hop_ms <= t[-1] < duration
        else:
            assert len(t) == 1
    grid = model.timestamp_grid
    assert model.encoder_stride == STRIDES[name] and (grid.hop, grid.phases) == (4, STRIDES[name] // 4)
    assert grid.first * MS_PER_FRAME == pytest.approx(first_ms)


class MeanPool(nn.Module):
    """An encoder whose frame ``j`` is the mean of input frames ``[j*stride, (j+1)*stride)``."""

    def __init__(self, stride: int, n_mels: int = 96) -> None:
        super().__init__()
        self.stride, self.embed_dim = stride, n_mels

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool1d(x.flatten(1, 2), self.stride, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frames(x).mean(-1)


@pytest.mark.parametrize("stride", [1, 3, 4, 16])
def test_each_frame_is_centred_on_its_timestamp_and_silence_pads_the_sound(stride):
    """Frame k is the mean of the log-mel frames around its timestamp, with the log-mel of silence
    before and after the sound (not the sound tiled, as training tiles short clips)."""
    torch.manual_seed(0)
    normalizer = Standardize(96)
    normalizer.set_stats(torch.randn(96) - 4, torch.rand(96) + 0.5)
    model = hear.HEARModel(MeanPool(stride), normalizer, LogMelConfig(), 101).eval()
    silence = torch.full((2, 96), math.log10(LogMelConfig().log_offset))
    for seconds in (0.05, 0.3, 1.07, 4.0):
        audio = noise(2, int(seconds * 22050))
        emb, stamps = hear.get_timestamp_embeddings(audio, model)
        mel = model.logmel(audio)[..., : 1 + audio.shape[-1] // 220]  # LogMel tiles audio under one FFT
        for k, centre in enumerate((stamps[0].double() / MS_PER_FRAME).tolist()):
            start = round(centre - (stride - 1) / 2)
            cols = [mel[..., i] if 0 <= i < mel.shape[-1] else silence for i in range(start, start + stride)]
            expected = normalizer(torch.stack(cols, -1)).mean(-1)
            torch.testing.assert_close(emb[:, k], expected, atol=1e-4, rtol=1e-4)


def test_timestamp_hop_ms_chooses_the_grid(checkpoints):
    model = hear.load_model(str(checkpoints["vgg"]))
    audio = noise(1, int(3.3 * 22050))
    fine, fine_stamps = hear.get_timestamp_embeddings(audio, model)
    model.timestamp_hop_ms = 1000  # one frame per encoder frame: 16 log-mel frames, one pass
    assert (model.timestamp_grid.hop, model.timestamp_grid.phases) == (16, 1)
    coarse, coarse_stamps = hear.get_timestamp_embeddings(audio, model)
    # the coarse grid is one of the fine grid's interleaved passes
    n = coarse.shape[1]
    torch.testing.assert_close(coarse, fine[:, 1::4][:, :n])
    torch.testing.assert_close(coarse_stamps, fine_stamps[:, 1::4][:, :n])
    model.timestamp_hop_ms = 20
    assert model.timestamp_grid.hop * MS_PER_FRAME == pytest.approx(19.95, abs=0.01)
    model.timestamp_hop_ms = 9
    with pytest.raises(ValueError, match="at least one log-mel frame"):
        hear.get_timestamp_embeddings(audio, model)
    with pytest.raises(TypeError, match="timestamp_hop_ms"):
        hear.load_model(str(checkpoints["vgg"]), timestamp_hop_ms=20)


# The session's pretraining run (a real `ser-ssl fit` checkpoint) from here on.


@pytest.fixture(scope="module")
def ckpt(pretrained) -> Path:
    return pretrained / "pretrain" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def model(ckpt) -> hear.HEARModel:
    return hear.load_model(str(ckpt))


@pytest.mark.slow
def test_model_has_the_hear_attributes(model):
    assert model.sample_rate == 22050 and isinstance(model.sample_rate, int)
    assert model.scene_embedding_size == model.timestamp_embedding_size == 32
    assert not model.training


@pytest.mark.slow
def test_the_hear_validator_checks_pass_on_a_pretraining_run(ckpt):
    hear_validator_checks(str(ckpt))


@pytest.mark.slow
@pytest.mark.parametrize("seconds", [0.2, 1.0, 3.7])
def test_embeddings_shapes_timestamps_and_batch_independence(model, seconds):
    n_samples = int(seconds * model.sample_rate)
    audio = 0.1 * torch.randn(3, n_samples, generator=torch.Generator().manual_seed(0))
    scene = hear.get_scene_embeddings(audio, model)
    emb, stamps = hear.get_timestamp_embeddings(audio, model)
    assert scene.shape == (3, 32) and scene.dtype == torch.float32
    assert emb.shape[0] == 3 and emb.shape[2] == 32 and emb.dtype == torch.float32
    assert stamps.shape == emb.shape[:2] and stamps.dtype == torch.float32
    assert torch.equal(stamps[0], stamps[2])
    diff = stamps[0].diff()
    assert torch.all((diff - diff.mean()).abs() < 1e-3) and diff.mean() <= 50
    assert torch.all(stamps >= 0) and stamps.max() < 1000 * n_samples / model.sample_rate
    for i in range(3):  # eval mode: a sound's embeddings do not depend on the rest of the batch
        alone = audio[i : i + 1]
        torch.testing.assert_close(hear.get_scene_embeddings(alone, model), scene[i : i + 1])
        torch.testing.assert_close(hear.get_timestamp_embeddings(alone, model)[0], emb[i : i + 1])


@pytest.mark.slow
def test_audio_must_be_a_batch_of_sounds(model):
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_scene_embeddings(torch.zeros(22050), model)
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_timestamp_embeddings(torch.zeros(1, 0), model)


@pytest.mark.slow
def test_load_model_refuses_what_is_not_a_pretraining_checkpoint(ckpt, tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        hear.load_model(str(garbage))
    probe = torch.load(ckpt, weights_only=True)
    probe.pop("ser_ssl_kind")
    torch.save(probe, tmp_path / "probe.ckpt")
    with pytest.raises(CheckpointError, match="probe or fine-tune"):
        hear.load_model(str(tmp_path / "probe.ckpt"))


@pytest.mark.slow
def test_load_model_without_recorded_features_falls_back_to_the_defaults(ckpt, tmp_path):
    bare = torch.load(ckpt, weights_only=True)
    bare.pop("datamodule_hyper_parameters")
    torch.save(bare, tmp_path / "bare.ckpt")
    with pytest.warns(UserWarning, match="does not record its data settings"):
        model = hear.load_model(str(tmp_path / "bare.ckpt"))
    assert model.sample_rate == 22050 and model.patch_frames == 101

"""The HEAR 2021 API wrapper: attributes, shapes, timestamps, batching and checkpoint errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ser_ssl import hear
from ser_ssl.tasks.checkpoint import CheckpointError

pytestmark = pytest.mark.slow  # needs the session's pretraining run


@pytest.fixture(scope="module")
def ckpt(pretrained) -> Path:
    return pretrained / "pretrain" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def model(ckpt) -> hear.HEARModel:
    return hear.load_model(str(ckpt))


def test_model_has_the_hear_attributes(model):
    assert model.sample_rate == 22050 and isinstance(model.sample_rate, int)
    assert model.scene_embedding_size == model.timestamp_embedding_size == 32
    assert not model.training


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
    assert torch.all(stamps[:, 1:] > stamps[:, :-1]) and torch.all(stamps >= 0)
    frame_ms = float(stamps[0, 1] - stamps[0, 0])
    assert stamps.max() <= 1000 * seconds + frame_ms / 2
    for i in range(3):  # eval mode: a sound's embeddings do not depend on the rest of the batch
        alone = audio[i : i + 1]
        torch.testing.assert_close(hear.get_scene_embeddings(alone, model), scene[i : i + 1])
        torch.testing.assert_close(hear.get_timestamp_embeddings(alone, model)[0], emb[i : i + 1])


def test_audio_must_be_a_batch_of_sounds(model):
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_scene_embeddings(torch.zeros(22050), model)


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


def test_load_model_without_recorded_features_falls_back_to_the_defaults(ckpt, tmp_path):
    bare = torch.load(ckpt, weights_only=True)
    bare.pop("datamodule_hyper_parameters")
    torch.save(bare, tmp_path / "bare.ckpt")
    with pytest.warns(UserWarning, match="does not record its data settings"):
        model = hear.load_model(str(tmp_path / "bare.ckpt"))
    assert model.sample_rate == 22050 and model.patch_frames == 101

"""Exported models: checkpoint -> folder (safetensors, config.json, model card) -> ser_ssl.from_pretrained,
with the same embeddings and class scores as the checkpoint's own code path."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import pytest
import soundfile as sf
import torch

import ser_ssl
from ser_ssl import hear
from ser_ssl.audio import LogMelConfig
from ser_ssl.cli import cli_main
from ser_ssl.pretrained import main
from ser_ssl.tasks import LinearProbe
from ser_ssl.tasks.checkpoint import CheckpointError
from ser_ssl.tasks.simclr import CHECKPOINT_KIND
from tests.conftest import tiny_args
from tests.test_readme import python_blocks

FEATURES = LogMelConfig(sample_rate=16000, n_fft=512, win_length=400, hop_length=160, n_mels=32, f_max=8000)
ENCODERS = {
    "vgg": {"class_path": "ser_ssl.models.VGGLike", "init_args": {"channels": [8, 16], "embed_dim": 24}},
    "crnn": {
        "class_path": "ser_ssl.models.CRNN",
        "init_args": {"channels": [8, 16], "time_pools": [2, 1], "embed_dim": 12},
    },
    "resnet": {"class_path": "ser_ssl.models.ResNet18", "init_args": {"width": 0.125}},
}


def pretraining_checkpoint(path, spec: dict) -> torch.Tensor:
    """A pretraining checkpoint as `ser-ssl fit` writes it, with random weights and statistics."""
    from ser_ssl.tasks.checkpoint import build_module

    torch.manual_seed(0)
    encoder = build_module(spec)
    for module in encoder.modules():  # move BatchNorm statistics off their initial values
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state |= {"normalizer.mean": torch.randn(32, 1), "normalizer.std": torch.rand(32, 1) + 0.5}
    state["normalizer.fitted"] = torch.tensor(True)
    torch.save(
        {
            "ser_ssl_kind": CHECKPOINT_KIND,
            "hyper_parameters": {"encoder": spec},
            "datamodule_hyper_parameters": {"features": asdict(FEATURES), "patch_frames": 24},
            "state_dict": state,
            "epoch": 3,
            "global_step": 42,
        },
        path,
    )
    return path


@pytest.mark.parametrize("name", ENCODERS)
def test_an_exported_encoder_gives_the_checkpoints_embeddings(name, tmp_path):
    ckpt = pretraining_checkpoint(tmp_path / "last.ckpt", ENCODERS[name])
    main([str(ckpt), str(tmp_path / "model")])
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["encoder"] == ENCODERS[name] and config["features"] == asdict(FEATURES)
    assert config["patch_frames"] == 24 and config["classifier"] is None
    model = ser_ssl.from_pretrained(tmp_path / "model")
    audio = torch.randn(3, 16000 * 2)  # 2 s: several windows each
    expected = hear.get_scene_embeddings(audio, hear.load_model(str(ckpt)))
    assert torch.allclose(model.embed(audio), expected, atol=1e-5)
    card = (tmp_path / "model" / "README.md").read_text()
    assert ENCODERS[name]["class_path"] in card and "step 42" in card and "from_pretrained" in card


def test_a_file_is_embedded_like_its_samples(tmp_path):
    ckpt = pretraining_checkpoint(tmp_path / "last.ckpt", ENCODERS["vgg"])
    model = ser_ssl.from_pretrained(ser_ssl.pretrained.export(ckpt, tmp_path / "model"))
    samples = 0.1 * torch.randn(16000)
    sf.write(tmp_path / "x.wav", samples.numpy(), 16000, subtype="FLOAT")
    assert torch.allclose(model.embed_file(tmp_path / "x.wav"), model.embed(samples[None])[0], atol=1e-6)
    with pytest.raises(ValueError, match="no classifier"):
        model.classify(samples[None])


def test_what_is_not_an_exported_model_is_refused_in_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="is not an exported ser-ssl model"):
        ser_ssl.from_pretrained(tmp_path)
    ckpt = pretraining_checkpoint(tmp_path / "last.ckpt", ENCODERS["vgg"])
    folder = ser_ssl.pretrained.export(ckpt, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(CheckpointError, match="update ser-ssl"):
        ser_ssl.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "encoder": {"class_path": "os.system"}}))
    with pytest.raises(CheckpointError, match="not one of ser-ssl's encoders"):
        ser_ssl.from_pretrained(folder)


@pytest.mark.slow
def test_an_exported_probe_classifies_like_the_probe(pretrained, tiny_data, tmp_path, monkeypatch):
    root = tmp_path / "probe"
    args = tiny_args("probe", root, tiny_data, pretrained / "cache")
    args += ["--model.init_args.encoder_checkpoint", str(pretrained / "pretrain/checkpoints/last.ckpt")]
    fit = cli_main(["fit", *args, "--trainer.max_epochs", "1"])
    ckpt = root / "checkpoints" / "last.ckpt"
    main([str(ckpt), str(tmp_path / "model")])
    model = ser_ssl.from_pretrained(tmp_path / "model")
    assert model.class_names == fit.datamodule.classes and not model.multilabel
    assert "linear probe" in (tmp_path / "model" / "README.md").read_text()
    probe = LinearProbe.load_from_checkpoint(ckpt, weights_only=True).eval()
    assert probe.class_names == model.class_names  # the head is rebuilt from the checkpoint's record
    audio = torch.randn(2, 22050 * 3)
    x = model.windows(audio)  # standardised with the exported statistics, the probe's own:
    assert torch.equal(model.normalizer.mean, probe.normalizer.mean)
    with torch.no_grad():
        logits = probe.classifier(probe.encoder(x.flatten(0, 1)))
    expected = torch.softmax(logits, dim=-1).view(2, x.shape[1], -1).mean(dim=1)
    assert torch.allclose(model.classify(audio), expected, atol=1e-5)
    assert torch.allclose(model.classify(audio).sum(dim=1), torch.ones(2))
    # the README's lines, as they are, on this export
    (block,) = [b for b in python_blocks() if "from_pretrained" in b]
    (tmp_path / "models").mkdir()
    (tmp_path / "model").rename(tmp_path / "models" / "my-probe")
    sf.write(tmp_path / "dog_bark.wav", 0.1 * torch.randn(22050).numpy(), 22050)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(block, scope)
    assert set(scope["scores"]) == set(model.class_names) and scope["embedding"].shape == (32,)


def test_an_exported_folder_loads_and_embeds_without_the_training_code(tmp_path):
    main([str(pretraining_checkpoint(tmp_path / "last.ckpt", ENCODERS["crnn"])), str(tmp_path / "model")])
    expected = ser_ssl.from_pretrained(tmp_path / "model").embed(torch.ones(1, 16000))
    torch.save(expected, tmp_path / "expected.pt")
    # a process in which Lightning, torchmetrics and ser-ssl's training code cannot be imported
    script = f"""
import sys
for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "torchmetrics", "ser_ssl.tasks"):
    sys.modules[name] = None
import torch, ser_ssl
model = ser_ssl.from_pretrained({str(tmp_path / "model")!r})
got = model.embed(torch.ones(1, 16000))
assert torch.allclose(got, torch.load({str(tmp_path / "expected.pt")!r}), atol=1e-6)
print("loaded", sorted(m for m in sys.modules if m.startswith("ser_ssl.")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "loaded" in done.stdout and "ser_ssl.data" not in done.stdout

"""Portable exports (ser_ssl.pretrained.export_portable): model.torchscript.pt and model.onnx of an exported
folder, loaded without ser-ssl (torch.jit.load, onnxruntime), give the model's own embeddings and class
scores, for all three encoders and batches of any size."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict

import pytest
import torch
from torch import nn

import ser_ssl
from ser_ssl.audio import Standardize
from ser_ssl.pretrained import (
    PORTABLE,
    PortableExportError,
    PretrainedModel,
    export,
    export_portable,
    main,
)
from ser_ssl.tasks.downstream import HEAD_KEY
from tests.test_pretrained_export import ENCODERS, FEATURES, pretraining_checkpoint

ATOL = RTOL = 1e-4
CAN_WRITE_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript"))
needs_onnx = pytest.mark.skipif(
    not CAN_WRITE_ONNX or importlib.util.find_spec("onnxruntime") is None,
    reason="ONNX export and check need onnx, onnxscript and onnxruntime (pip install 'ser-ssl[onnx]')",
)


def run_torchscript(folder, audio: torch.Tensor) -> list[torch.Tensor]:
    module = torch.jit.load(str(folder / "model.torchscript.pt"))
    with torch.no_grad():
        out = module(audio)
    return list(out) if isinstance(out, tuple) else [out]


def run_onnx(folder, audio: torch.Tensor) -> list[torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["audio"]
    assert session.get_inputs()[0].shape[0] == "batch"  # a named dynamic batch dimension
    return [torch.from_numpy(o) for o in session.run(None, {"audio": audio.numpy()})]


RUNNERS = {"torchscript": run_torchscript, "onnx": run_onnx}


def assert_same(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert got.shape == expected.shape and got.dtype == torch.float32
    diff = (got - expected).abs().max().item()
    assert torch.allclose(got, expected, atol=ATOL, rtol=RTOL), f"{what}: differences up to {diff:.3g}"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per encoder, an exported pretraining folder with its portable files (written once)."""
    folders = {}

    def get(name: str):
        if name not in folders:
            tmp = tmp_path_factory.mktemp(name)
            flags = ["--torchscript", "--onnx"] if CAN_WRITE_ONNX else ["--torchscript"]
            main([str(pretraining_checkpoint(tmp / "last.ckpt", ENCODERS[name])), str(tmp / "model"), *flags])
            folders[name] = tmp / "model"
        return folders[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize(
    "fmt", ["torchscript", pytest.param("onnx", marks=needs_onnx)], ids=["torchscript", "onnx"]
)
@pytest.mark.parametrize("name", ENCODERS)
def test_portable_files_give_the_models_embeddings(name, fmt, exported):
    folder = exported(name)
    model = ser_ssl.from_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    window = config["portable"]["input"]["shape"][1]
    assert window == (config["patch_frames"] - 1) * config["features"]["hop_length"]
    assert config["portable"]["outputs"] == {"embedding": ["batch", model.encoder.embed_dim]}
    assert config["portable"]["files"][fmt] == PORTABLE[fmt] and (folder / PORTABLE[fmt]).is_file()
    torch.manual_seed(1)
    for batch in (3, 1):  # the batch dimension is free
        audio = torch.randn(batch, window)
        (embedding,) = RUNNERS[fmt](folder, audio)
        assert_same(embedding, model.embed(audio), f"{name} {fmt}")


def probe_folder(tmp_path, multilabel: bool):
    """An exported linear probe (BatchNorm and a linear layer on the CRNN encoder) of a checkpoint made
    like `ser-ssl fit` writes one."""
    ckpt = torch.load(
        pretraining_checkpoint(tmp_path / "pre.ckpt", ENCODERS["crnn"]), weights_only=True, map_location="cpu"
    )
    dim, classes = ENCODERS["crnn"]["init_args"]["embed_dim"], ["dog", "rain", "siren"]
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(("encoder.", "normalizer."))}
    torch.manual_seed(2)
    head = nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, len(classes)))
    head[0].running_mean.uniform_(-0.5, 0.5)
    head[0].running_var.uniform_(0.5, 2.0)
    state |= {f"classifier.{k}": v for k, v in head.state_dict().items()}
    probe = {
        "state_dict": state,
        HEAD_KEY: {
            "task": "LinearProbe",
            "classes": classes,
            "multilabel": multilabel,
            "data": {"features": asdict(FEATURES), "patch_frames": 24},
            "encoder": ENCODERS["crnn"],
        },
        "epoch": 1,
        "global_step": 5,
    }
    torch.save(probe, tmp_path / "probe.ckpt")
    return export(tmp_path / "probe.ckpt", tmp_path / "model")


@pytest.mark.slow
@pytest.mark.parametrize("multilabel", [False, True], ids=["softmax", "sigmoid"])
def test_a_classifier_gives_embeddings_and_the_models_class_scores(multilabel, tmp_path):
    folder = probe_folder(tmp_path, multilabel)
    formats = ("torchscript", "onnx") if CAN_WRITE_ONNX else ("torchscript",)
    assert export_portable(folder, formats=formats) == {f: folder / PORTABLE[f] for f in formats}
    model = ser_ssl.from_pretrained(folder)
    assert model.classifier is not None and model.multilabel == multilabel
    portable = json.loads((folder / "config.json").read_text())["portable"]
    assert portable["outputs"] == {"embedding": ["batch", 12], "scores": ["batch", 3]}
    assert portable["classes"] == ["dog", "rain", "siren"]
    assert portable["scores"] == ("sigmoid" if multilabel else "softmax")
    runners = [f for f in formats if f == "torchscript" or importlib.util.find_spec("onnxruntime")]
    torch.manual_seed(3)
    for batch in (3, 1):
        audio = torch.randn(batch, portable["input"]["shape"][1])
        for fmt in runners:
            embedding, scores = RUNNERS[fmt](folder, audio)
            assert_same(embedding, model.embed(audio), f"probe {fmt}")
            assert_same(scores, model.classify(audio), f"probe {fmt}")
        if not multilabel:
            assert torch.allclose(scores.sum(dim=1), torch.ones(batch))


class DataDependent(nn.Module):
    """An encoder whose computation depends on its input's values: torch.export cannot capture it."""

    embed_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2).expand(-1, self.embed_dim, -1) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.frames(x).mean(dim=-1)
        return h if bool(h.sum() > 0) else -h


@needs_onnx
def test_an_encoder_that_cannot_be_exported_is_refused_in_one_line(tmp_path):
    model = PretrainedModel(DataDependent(), Standardize(FEATURES.n_mels), FEATURES, 24).eval()
    with pytest.raises(PortableExportError, match=r"DataDependent could not be exported to onnx: \w+"):
        export_portable(model, tmp_path, formats=("onnx",))
    assert not (tmp_path / "model.onnx").exists()


def test_what_export_portable_needs_is_said(tmp_path, monkeypatch):
    model = PretrainedModel(DataDependent(), Standardize(FEATURES.n_mels), FEATURES, 24).eval()
    with pytest.raises(ValueError, match="needs out_dir"):
        export_portable(model)
    with pytest.raises(ValueError, match="formats must be some of"):
        export_portable(model, tmp_path, formats=("tflite",))
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if it were not installed
    with pytest.raises(PortableExportError, match=r"pip install 'ser-ssl\[onnx\]'"):
        export_portable(model, tmp_path, formats=("onnx",))


def test_a_file_that_gives_other_numbers_is_refused_and_removed(tmp_path, monkeypatch):
    """The export's own check (it caught onnxscript < 0.7.1 writing the CRNN's GRU wrongly)."""
    write = ser_ssl.pretrained._write_torchscript

    def off_by_a_bit(*args):
        run = write(*args)
        return lambda audio: [out + 1e-2 for out in run(audio)]

    monkeypatch.setattr(ser_ssl.pretrained, "_write_torchscript", off_by_a_bit)
    model = PretrainedModel(DataDependent(), Standardize(FEATURES.n_mels), FEATURES, 24).eval()
    with pytest.raises(PortableExportError, match="torchscript file of DataDependent gives other numbers"):
        export_portable(model, tmp_path, formats=("torchscript",))
    assert not (tmp_path / "model.torchscript.pt").exists()

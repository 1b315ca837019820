"""The EVAR adapter on a tiny exported model: its embeddings are the model's, in EVAR's shapes, at EVAR's
sample rates; the config it writes parses and builds it; inside EVAR it derives from EVAR's base class.
EVAR itself is not installed (it is not on PyPI): a stand-in of its base class plays its part."""

from __future__ import annotations

import importlib.util
import operator
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
import torchaudio

import ser_ssl.evar
from ser_ssl.errors import ConfigError
from ser_ssl.evar import AR_SerSSL, evar_config, evar_sample_rate, main
from ser_ssl.pretrained import export, from_pretrained
from tests.test_pretrained_export import ENCODERS, pretraining_checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VGG-like model at 16 kHz (one of EVAR's rates), embeddings of 24 dimensions."""
    tmp = tmp_path_factory.mktemp("evar")
    return export(pretraining_checkpoint(tmp / "last.ckpt", ENCODERS["vgg"]), tmp / "model")


def test_the_adapter_gives_the_models_embeddings_in_evars_shapes(folder: Path) -> None:
    ar = AR_SerSSL({"weight_file": str(folder), "sample_rate": 16000}).eval()
    model = from_pretrained(folder)
    audio = torch.randn(3, 16000 * 2)
    with torch.no_grad():
        scene, frames = ar(audio), ar.encode_frames(audio)
        expected_frames, _ = model.timestamp_embeddings(audio)
    assert scene.shape == (3, 24) and torch.equal(scene, model.embed(audio))
    assert frames.shape == (3, 24, expected_frames.shape[1]) and expected_frames.shape[1] > 1
    assert torch.equal(frames, expected_frames.transpose(1, 2))
    ar.precompute(torch.device("cpu"), [])  # EVAR calls it before embedding; the folder has its statistics


def test_audio_at_another_evar_rate_is_resampled_to_the_models(folder: Path) -> None:
    ar = AR_SerSSL({"weight_file": str(folder), "sample_rate": 32000}).eval()
    audio = torch.randn(2, 32000)
    with torch.no_grad():
        scene, frames = ar(audio), ar.encode_frames(audio)
    at_16k = torchaudio.functional.resample(audio, 32000, 16000)
    model = from_pretrained(folder)
    assert torch.equal(scene, model.embed(at_16k))
    assert frames.shape[:2] == (2, 24) and frames.shape[2] == model.timestamp_embeddings(at_16k)[0].shape[1]


def test_the_config_parses_and_builds_the_adapter(folder: Path, tmp_path: Path, capsys) -> None:
    yaml = pytest.importorskip("yaml")
    odd = tmp_path / "my models: best #final"  # a path YAML would misread unquoted
    shutil.copytree(folder, odd)
    cfg = yaml.safe_load(evar_config(str(odd)))
    assert cfg == {
        "audio_repr": "ar_ser_ssl.AR_SerSSL",
        "weight_file": str(odd),
        "feature_d": 24,
        "sample_rate": 16000,
        "batch_size": 64,
        "lr_lineareval": 0.0003,
        "report_per_epochs": 20,
        "early_stop_epochs": 20,
    }
    assert AR_SerSSL(cfg)(torch.randn(1, 16000)).shape == (1, 24)
    main(["config", "--weight_file", str(folder), "--sample_rate", "48000", "--batch_size", "8"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["sample_rate"], cfg["batch_size"], cfg["weight_file"]) == (48000, 8, str(folder))
    with pytest.raises(ConfigError, match="not at sample_rate 22050"):
        evar_config(str(folder), sample_rate=22050)


def test_evars_rate_for_a_model() -> None:
    assert evar_sample_rate(16000, 8000.0) == 16000  # EVAR has the model's own rate
    assert evar_sample_rate(22050, 10500.0) == 22000  # ser-ssl's default: 22 kHz still holds 10.5 kHz
    assert evar_sample_rate(22050, 11025.0) == 32000
    with pytest.raises(ConfigError, match="reaches the model's f_max"):
        evar_sample_rate(96000, 30000.0)


def test_inside_evar_the_adapter_is_one_of_evars_models(folder: Path, monkeypatch) -> None:
    class BaseAudioRepr(torch.nn.Module):
        """EVAR's evar.ar_base.BaseAudioRepr as far as the adapter sees it."""

        def __init__(self, cfg: dict, filename_mode: bool = False) -> None:
            super().__init__()
            self.cfg = dict(cfg)
            self.filename_mode = filename_mode

    evar, ar_base = types.ModuleType("evar"), types.ModuleType("evar.ar_base")
    ar_base.BaseAudioRepr = BaseAudioRepr
    evar.ar_base = ar_base
    monkeypatch.setitem(sys.modules, "evar", evar)
    monkeypatch.setitem(sys.modules, "evar.ar_base", ar_base)
    spec = importlib.util.spec_from_file_location("evar.ar_ser_ssl", ser_ssl.evar.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the adapter's module, imported where evar.ar_base exists
    evar.ar_ser_ssl = module
    cfg = {"audio_repr": "ar_ser_ssl.AR_SerSSL", "weight_file": str(folder), "sample_rate": 16000}
    ar = operator.attrgetter(cfg["audio_repr"])(evar)(cfg)  # EVAR: eval("evar." + cfg.audio_repr)(cfg)
    assert isinstance(ar, BaseAudioRepr) and ar.cfg["weight_file"] == str(folder)
    assert ar(torch.randn(2, 16000)).shape == (2, 24)

"""An exported ser-ssl model inside EVAR (https://github.com/nttcslab/eval-audio-repr), the linear
evaluation suite of audio representations, which is not on PyPI.

EVAR builds the model a config names, ``audio_repr: ar_ser_ssl.AR_SerSSL``, as
``eval("evar." + cfg.audio_repr)(cfg)``: in a checkout of EVAR with ser-ssl installed in its
environment, the module ``evar/ar_ser_ssl.py`` holds ``from ser_ssl.evar import AR_SerSSL`` and
``lineareval.py`` imports it next to EVAR's own models. The config comes from

    python -m ser_ssl.evar config --weight_file models/my-model > config/ser_ssl.yaml

``weight_file`` is an exported folder or a Hugging Face Hub id (:func:`ser_ssl.from_pretrained`).
Without EVAR installed, :class:`AR_SerSSL` is a plain ``nn.Module`` with the same methods.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torchaudio
from torch import nn

from ser_ssl.errors import ConfigError
from ser_ssl.pretrained import from_pretrained

# the rates EVAR's data sets are prepared at (work/16k, work/22k, ...): a config must name one of them
EVAR_RATES = (16000, 22000, 32000, 44100, 48000)
MODULE = "ar_ser_ssl"  # the file evar/ar_ser_ssl.py in EVAR's checkout

try:  # inside EVAR: a subclass of its base, as EVAR's own wrappers are
    from evar.ar_base import BaseAudioRepr
except ImportError:

    class BaseAudioRepr(nn.Module):
        """What :class:`AR_SerSSL` needs of EVAR's base class: the config as ``self.cfg``."""

        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            self.cfg = dict(cfg)


class AR_SerSSL(BaseAudioRepr):
    """EVAR's audio representation of an exported ser-ssl model: ``forward`` gives the model's sound
    embeddings ``[B, D]`` (the mean over windows, as ``model.embed``), ``encode_frames`` its timestamp
    embeddings ``[B, D', T]`` (:meth:`~ser_ssl.hear.HEARModel.timestamp_embeddings`; ``D'`` is ``D``
    except for the paper's encoders). EVAR's audio at ``cfg.sample_rate`` is resampled to the model's
    rate when the two differ, as EVAR's rates may not include the model's (22,050 Hz by default).
    """

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        self.model = from_pretrained(self.cfg["weight_file"])
        self.sample_rate = int(self.cfg["sample_rate"])

    def precompute(self, device: torch.device, data_loader: Any) -> None:
        """Nothing to compute: the folder carries its pretraining's input statistics."""

    def encode_frames(self, batch_audio: torch.Tensor) -> torch.Tensor:
        """Frame embeddings ``[B, D', T]`` of ``[B, samples]`` audio at ``cfg.sample_rate``."""
        frames, _ = self.model.timestamp_embeddings(self._resampled(batch_audio))
        return frames.transpose(1, 2)

    def forward(self, batch_audio: torch.Tensor) -> torch.Tensor:
        """Sound embeddings ``[B, D]`` of ``[B, samples]`` audio at ``cfg.sample_rate``."""
        return self.model(self._resampled(batch_audio))

    def _resampled(self, batch_audio: torch.Tensor) -> torch.Tensor:
        if self.sample_rate == self.model.sample_rate:
            return batch_audio
        return torchaudio.functional.resample(batch_audio, self.sample_rate, self.model.sample_rate)


def evar_sample_rate(sample_rate: int, f_max: float) -> int:
    """The rate of EVAR's data to feed a model: its own when EVAR has it, else the lowest whose Nyquist
    frequency reaches the model's highest mel band, so resampling loses nothing the model hears."""
    if sample_rate in EVAR_RATES:
        return sample_rate
    rate = min((r for r in EVAR_RATES if r / 2 >= f_max), default=None)
    if rate is None:
        raise ConfigError(f"no EVAR sample rate {EVAR_RATES} reaches the model's f_max of {f_max:g} Hz")
    return rate


def evar_config(weight_file: str, sample_rate: int | None = None, batch_size: int = 64) -> str:
    """An EVAR config (YAML) for the model ``weight_file``, an exported folder or a Hub id, which it
    loads to read the embedding size and the sample rate. ``sample_rate`` (one of :data:`EVAR_RATES`)
    overrides :func:`evar_sample_rate`. The training settings are those of EVAR's own configs."""
    model = from_pretrained(weight_file)
    if sample_rate is None:
        sample_rate = evar_sample_rate(model.sample_rate, model.logmel.config.f_max)
    elif sample_rate not in EVAR_RATES:
        raise ConfigError(f"EVAR's data come at {EVAR_RATES} Hz, not at sample_rate {sample_rate}")
    settings = {
        "audio_repr": f"{MODULE}.{AR_SerSSL.__name__}",
        "weight_file": weight_file,
        "feature_d": model.scene_embedding_size,
        "sample_rate": sample_rate,
        "batch_size": batch_size,
        "lr_lineareval": 0.0003,
        "report_per_epochs": 20,
        "early_stop_epochs": 20,
    }
    lines = [f"# a ser-ssl model for EVAR (the model runs at {model.sample_rate} Hz); python -m ser_ssl.evar"]
    # JSON scalars are YAML: a path with spaces or colons stays one string
    lines += [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ser_ssl.evar",
        description="EVAR support for exported ser-ssl models (the adapter is ser_ssl.evar.AR_SerSSL).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="print an EVAR config (YAML) for an exported model")
    config.add_argument("--weight_file", required=True, help="an exported folder or a Hugging Face Hub id")
    config.add_argument("--sample_rate", type=int, choices=EVAR_RATES, help="EVAR's data rate to use")
    config.add_argument("--batch_size", type=int, default=64, help="sounds per batch (default: 64)")
    args = parser.parse_args(argv)
    print(evar_config(args.weight_file, args.sample_rate, args.batch_size), end="")


if __name__ == "__main__":
    from ser_ssl.cli import exit_on_user_error

    exit_on_user_error(main, prog="python -m ser_ssl.evar")

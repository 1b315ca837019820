"""The one way to get a pretrained encoder out of a pretraining checkpoint."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ser_ssl.audio import LogMelConfig
from ser_ssl.errors import CheckpointError
from ser_ssl.models.build import build_module, check_trusted
from ser_ssl.tasks.simclr import CHECKPOINT_KIND, ENCODER_KEY, PRETRAINED_ON_KEY


@dataclass
class Pretrained:
    """What a pretraining checkpoint provides to the code that embeds audio with its encoder.

    ``features`` and ``patch_frames`` are the pretraining data module's settings, recorded by the CLI
    (``datamodule_hyper_parameters``); ``None`` when the checkpoint does not hold them (a data module
    built in Python).
    """

    encoder: nn.Module | None  # None where only the record of the pretraining data is kept
    stats: dict[str, torch.Tensor]  # the Standardize buffers (mean, std, fitted); empty without weights
    features: LogMelConfig | None = None
    patch_frames: int | None = None
    pretrained_on: frozenset[str] | None = None  # ids of the pretraining clips (ser_ssl.files.clip_ids)
    encoder_spec: dict | None = None  # the encoder's ``class_path``/``init_args`` config


def load_pretrained(path: str | Path, load_weights: bool = True) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Rebuild the encoder recorded in a SimCLR checkpoint; returns it and the input statistics.

    The checkpoint is read with ``weights_only=True``, and only ser-ssl's own encoders are built from
    it unless ``SER_SSL_TRUST_CHECKPOINTS=1`` (:func:`check_trusted`). With ``load_weights=False`` the
    encoder keeps its random initialisation and no statistics are returned (a same-architecture
    baseline).
    """
    pretrained = read_pretrained(path, load_weights)
    return pretrained.encoder, pretrained.stats


def read_checkpoint(path: Path, what: str, fix: str, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint read with ``weights_only=True``; a missing file is ``"<what> <path> does not exist;
    <fix>"``, an unreadable one one line too. ``mmap``: read only the parts used (for a look at the
    records, not for tensors kept while the file may be rewritten)."""
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist; {fix}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many kinds for files that are not checkpoints
        if isinstance(err, pickle.UnpicklingError):
            reason = "it holds more than tensors and plain data, or is not a checkpoint"
        else:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({reason}; cut short by a kill while saving?)"
        ) from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a Lightning checkpoint")
    return ckpt


def read_pretrained(
    path: str | Path, load_weights: bool = True, encoder: nn.Module | None = None
) -> Pretrained:
    """:func:`load_pretrained` plus the feature settings the encoder was pretrained on, from one read.

    ``encoder``: a network built by the caller (``--model.encoder``) to load the weights into, instead
    of the one the checkpoint records (needed when it records none).
    """
    path = Path(path)
    fix = "pretrain first (ser-ssl fit --config configs/pretrain.yaml) or set --model.encoder_checkpoint"
    return pretrained_from(read_checkpoint(path, "encoder checkpoint", fix), path, load_weights, encoder)


def pretrained_from(
    ckpt: dict[str, Any], path: Path, load_weights: bool = True, encoder: nn.Module | None = None
) -> Pretrained:
    """:class:`Pretrained` of a checkpoint already read from ``path`` (``encoder``: as in
    :func:`read_pretrained`)."""
    if ckpt.get("ser_ssl_kind") != CHECKPOINT_KIND:
        raise CheckpointError(
            f"{path} is not a ser-ssl pretraining checkpoint (a probe or fine-tune checkpoint, or "
            "another project's?); pass the checkpoint written by `ser-ssl fit --config configs/pretrain.yaml`"
        )
    spec = None  # the config that built the encoder: none when the caller gives the network
    if encoder is None:
        spec = ckpt.get(ENCODER_KEY) or ckpt.get("hyper_parameters", {}).get("encoder")  # the latter: older
        if not isinstance(spec, dict) or "class_path" not in spec:
            raise CheckpointError(
                f"{path} does not record its encoder's config (an encoder class of your own built in "
                "Python, not from a config); pass the same network as --model.encoder"
            )
        check_trusted(spec, path)
        encoder = build_module(spec)
    features, patch_frames = _data_settings(ckpt)
    seen = ckpt.get(PRETRAINED_ON_KEY)
    pretrained_on = frozenset(seen) if isinstance(seen, list) else None
    if not load_weights:  # a random encoder has seen no clip
        return Pretrained(encoder, {}, features, patch_frames, encoder_spec=spec)
    state = ckpt["state_dict"]
    enc_state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    try:
        encoder.load_state_dict(enc_state)
    except RuntimeError as err:
        if spec is None:
            raise CheckpointError(f"--model.encoder does not match {path}: {err}") from err
        raise CheckpointError(
            f"{path}: encoder weights do not match its config {spec['class_path']}: {err}"
        ) from err
    stats = {k.removeprefix("normalizer."): v for k, v in state.items() if k.startswith("normalizer.")}
    return Pretrained(encoder, stats, features, patch_frames, pretrained_on, spec)


def _data_settings(ckpt: dict) -> tuple[LogMelConfig | None, int | None]:
    """The log-mel settings and patch length of the data module the checkpoint was trained with."""
    hparams = ckpt.get("datamodule_hyper_parameters")
    if not isinstance(hparams, dict):
        return None, None
    features = hparams.get("features")
    if isinstance(features, dict):
        try:
            features = LogMelConfig(**features)
        except TypeError:  # settings of another version of LogMelConfig: treat as unrecorded
            features = None
    patch_frames = hparams.get("patch_frames")
    return (
        features if isinstance(features, LogMelConfig) else None,
        patch_frames if isinstance(patch_frames, int) else None,
    )

"""The one way to get a pretrained encoder out of a pretraining checkpoint."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from jsonargparse import ArgumentParser
from torch import nn

from ser_ssl.errors import UserError
from ser_ssl.tasks.simclr import CHECKPOINT_KIND


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot provide an encoder; the message names the file and the fix."""


def build_module(spec: dict) -> nn.Module:
    """Instantiate a ``{"class_path": ..., "init_args": ...}`` config with jsonargparse."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "module", fail_untyped=False)
    cfg = parser.parse_object({"module": spec})
    return parser.instantiate(cfg).module


def load_pretrained(path: str | Path, load_weights: bool = True) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Rebuild the encoder recorded in a SimCLR checkpoint; returns it and the input statistics.

    The checkpoint is read with ``weights_only=True``. With ``load_weights=False`` the encoder keeps
    its random initialisation and no statistics are returned (a same-architecture baseline).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"encoder checkpoint {path} does not exist; pretrain first "
            "(ser-ssl fit --config configs/pretrain.yaml) or set --model.encoder_checkpoint"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({err})") from err
    if not isinstance(ckpt, dict) or ckpt.get("ser_ssl_kind") != CHECKPOINT_KIND:
        raise CheckpointError(
            f"{path} is not a ser-ssl pretraining checkpoint (a probe or fine-tune checkpoint, or "
            "another project's?); pass the checkpoint written by `ser-ssl fit --config configs/pretrain.yaml`"
        )
    spec = ckpt.get("hyper_parameters", {}).get("encoder")
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise CheckpointError(
            f"{path} does not record its encoder's config (the model was built in Python, not from a "
            "config); rebuild it by passing the same --model.encoder"
        )
    encoder = build_module(spec)
    if not load_weights:
        return encoder, {}
    state = ckpt["state_dict"]
    enc_state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    try:
        encoder.load_state_dict(enc_state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: encoder weights do not match its config {spec['class_path']}: {err}"
        ) from err
    stats = {k.removeprefix("normalizer."): v for k, v in state.items() if k.startswith("normalizer.")}
    return encoder, stats

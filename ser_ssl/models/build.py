"""Building an encoder from the config a checkpoint or an exported model records, and the check that
it names only ser-ssl's own encoders: building a class runs its code, and the file chooses the class."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from jsonargparse import ArgumentParser
from torch import nn

from ser_ssl import models
from ser_ssl.errors import CheckpointError
from ser_ssl.models import encoders, paper
from ser_ssl.models.config import is_plain_setting

TRUST_ENV = "SER_SSL_TRUST_CHECKPOINTS"
"""Set to ``1`` to build any encoder class a checkpoint names, not only ser-ssl's own."""

OWN_ENCODERS = frozenset(
    cls
    for cls in (getattr(models, name) for name in models.__all__)
    if isinstance(cls, type)
    and issubclass(cls, nn.Module)
    and cls.__module__ in (encoders.__name__, paper.__name__)
)
"""The classes a checkpoint may name without :data:`TRUST_ENV`: the encoders ``ser_ssl.models`` exports
(ser-ssl's own and the paper's)."""


def _own_class(class_path: object) -> type | None:
    """The ser-ssl encoder ``class_path`` names (any spelling), else None; imports only ``ser_ssl.*``."""
    if not isinstance(class_path, str):
        return None
    module, _, name = class_path.rpartition(".")
    if not module.startswith("ser_ssl.") and module != "ser_ssl":
        return None  # refused without importing anything
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except (ImportError, TypeError, ValueError):  # no such ser_ssl module, or not a module name
        return None
    return cls if cls in OWN_ENCODERS else None


def trusted() -> bool:
    """Whether the user set :data:`TRUST_ENV`: build whatever a checkpoint names."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in {"1", "true", "yes"}


def check_trusted(spec: dict, path: Path) -> None:
    """Refuse an encoder config that would build anything but a ser-ssl encoder from plain settings.

    Building a class runs its code, and a checkpoint chooses the class; ``weights_only=True`` does not
    cover that. :data:`TRUST_ENV` ``=1`` lifts the check.
    """
    if trusted():
        return
    class_path = spec.get("class_path")
    fix = (
        "only load checkpoints you trust: building another class runs its code; "
        f"to build it anyway, set {TRUST_ENV}=1"
    )
    if _own_class(class_path) is None:
        names = ", ".join(sorted(f"ser_ssl.models.{cls.__name__}" for cls in OWN_ENCODERS))
        raise CheckpointError(
            f"{path} names the encoder class {class_path!r}, which is not one of ser-ssl's encoders "
            f"({names}); {fix}"
        )
    init_args = spec.get("init_args", {})
    bad = [str(key) for key in spec if key not in ("class_path", "init_args")]
    if not isinstance(init_args, dict):
        bad.append("init_args")
    else:
        bad += [f"init_args.{key}" for key, value in init_args.items() if not is_plain_setting(value)]
    if bad:
        raise CheckpointError(
            f"{path}: the settings {', '.join(bad)} of its encoder {class_path} are not plain numbers, "
            f"strings or lists (a nested class_path would build another class); {fix}"
        )


#: Where the classes a run's checkpoint names live (its encoder, mix-back, augmentations).
OWN_PACKAGES = ("ser_ssl.models.", "ser_ssl.augment.")


def check_classes_trusted(hparams: object, path: Path) -> None:
    """Refuse a checkpoint's hyper-parameters that name a class outside ser-ssl's models and
    augmentations: Lightning builds a ``--ckpt_path`` checkpoint's model from them, which runs those
    classes' code. :data:`TRUST_ENV` ``=1`` lifts the check."""
    if trusted():
        return
    todo = [hparams]
    while todo:
        value = todo.pop()
        if isinstance(value, dict):
            named = value.get("class_path")
            if named is not None and not (isinstance(named, str) and named.startswith(OWN_PACKAGES)):
                raise CheckpointError(
                    f"{path} names the class {named!r} in its settings, which is not one of ser-ssl's; "
                    f"only load checkpoints you trust: building it runs its code; to build it anyway, "
                    f"set {TRUST_ENV}=1"
                )
            todo += value.values()
        elif isinstance(value, list):
            todo += value


def build_module(spec: dict) -> nn.Module:
    """Instantiate a ``{"class_path": ..., "init_args": ...}`` config with jsonargparse."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "module", fail_untyped=False)
    cfg = parser.parse_object({"module": spec})
    return parser.instantiate(cfg).module

"""The config an encoder was built with, kept on the instance.

A model built from a YAML config records its encoder as the config's ``class_path``/``init_args``;
one built in Python (``SimCLR(encoder=VGGLike(embed_dim=256))``, or plain ``SimCLR()``) holds only
the object. With the arguments recorded here, its checkpoints name the encoder the same way, so
probes, exports and the HEAR API can rebuild it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, TypeVar

from torch import nn

T = TypeVar("T", bound=type)

_RECORD = "_ser_ssl_config"


def records_config(cls: T) -> T:
    """Class decorator: each instance keeps the class path and the arguments it was built with.

    Only an instance of exactly ``cls`` is recorded: a subclass may build other layers from the same
    arguments, so recording it as ``cls`` would rebuild the wrong network.
    """
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if type(self) is not cls:
            return
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init_args = {name: _lists(value) for name, value in list(bound.arguments.items())[1:]}
        if all(is_plain_setting(value) for value in init_args.values()):
            class_path = f"{cls.__module__}.{cls.__qualname__}"
            self.__dict__[_RECORD] = {"class_path": class_path, "init_args": init_args}

    cls.__init__ = __init__
    return cls


def recorded_config(module: nn.Module) -> dict[str, Any] | None:
    """``{"class_path": ..., "init_args": ...}`` of an encoder built in Python, or None when it records
    none (a class without :func:`records_config`, or arguments that are not plain data).

    An encoder that jsonargparse builds lazily (``lazy_instance``, the tasks' defaults) gives the
    config it was declared with.
    """
    lazy = getattr(module, "lazy_get_init_data", None)
    if callable(lazy):
        data = lazy().as_dict()
        return {"class_path": data["class_path"], "init_args": dict(data.get("init_args") or {})}
    return module.__dict__.get(_RECORD)


def is_plain_setting(value: object) -> bool:
    """Numbers, strings, booleans, None and lists of them: nothing jsonargparse would build a class from."""
    if isinstance(value, (list, tuple)):
        return all(is_plain_setting(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _lists(value: Any) -> Any:
    """Tuples as lists, as a YAML config gives them."""
    return [_lists(v) for v in value] if isinstance(value, tuple) else value

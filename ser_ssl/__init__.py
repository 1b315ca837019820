"""ser-ssl: self-supervised contrastive learning of sound-event representations."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "from_pretrained"]


def __getattr__(name: str) -> Any:
    """``ser_ssl.from_pretrained`` (:mod:`ser_ssl.pretrained`), imported on first use so that
    ``import ser_ssl`` stays light."""
    if name == "from_pretrained":
        from ser_ssl.pretrained import from_pretrained

        return from_pretrained
    raise AttributeError(f"module 'ser_ssl' has no attribute {name!r}")

"""The augmentation pipeline of one view: transforms applied in order, inspectable step by step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ser_ssl.augment.transforms import BatchTransform, Params


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline as the view notebook shows it.

    ``params`` are the drawn per-sample parameters when ``transform`` is a :class:`BatchTransform`
    (``None`` for other modules and for the input stage, whose ``transform`` is ``None`` too).
    """

    name: str
    output: torch.Tensor
    params: Params | None
    transform: nn.Module | None


class Augmentations(nn.Module):
    """Applies ``transforms`` in the order given; an empty (or ``None``) list is the identity.

    Any module mapping ``x -> x`` fits (e.g. a torchaudio transform), not only :class:`BatchTransform`.
    """

    def __init__(self, transforms: list[nn.Module] | None = None) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms or [])

    def __len__(self) -> int:
        return len(self.transforms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            x = transform(x)
        return x

    def stages(self, x: torch.Tensor) -> list[Stage]:
        """The input and every step's output with its drawn parameters, for the view notebook.

        Draws from the global RNG in the same order as ``forward``, so under the same RNG state the
        last stage's output equals ``forward(x)``. Repeated transform names get ``#2``, ``#3``, ...
        """
        stages = [Stage("input", x, None, None)]
        seen: dict[str, int] = {}
        for transform in self.transforms:
            name = type(transform).__name__
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f"{name}#{seen[name]}"
            params = None
            if isinstance(transform, BatchTransform):
                params = transform.sample_params(x)
                x = transform.apply(x, params)
            else:
                x = transform(x)
            stages.append(Stage(name, x, params, transform))
        return stages

"""Whole-clip inference: how a clip of any length becomes windows, embeddings and a frame sequence.

This module is the one place for it, so that evaluation, ``ser-ssl predict``, the HEAR API, exported
models and the callbacks treat a clip alike:

- **Windows.** A clip of ``n`` log-mel frames is cut into windows of the patch length with a hop
  (:func:`window_starts`); the last window ends at the clip's end, so it may overlap the one before.
  A clip shorter than a patch is tiled along time (:func:`window_index`), as the training patches are.
- **Clip outputs** are the mean of the clip's window outputs (:func:`clip_mean`): embeddings, or
  class probabilities for evaluation.
- **Frame sequences** lie on one regular time grid (:class:`TimestampGrid`, :func:`grid_frames`), the
  same for the HEAR API and ``ser-ssl predict``'s frame-level export.
- **Audio in, embeddings out**: :class:`HEARModel` (log-mel, standardisation, encoder), behind the
  HEAR API (:mod:`ser_ssl.hear`) and exported models (:mod:`ser_ssl.pretrained`).
- **Patch embeddings** for monitors and tables come from :func:`embed_patches`, with the encoder in
  eval mode (:func:`eval_mode`).

Torch, numpy and ser-ssl's front end: nothing here needs Lightning or the training code, so an
exported model loads without them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ser_ssl.audio import LogMel, LogMelConfig, Standardize

# windows per encoder call on long sounds: bounds memory; on the CPU, small batches stay in cache (16 run
# VGGLike about 1.5 times faster per window than 256 on one core)
WINDOW_BATCH = {"cpu": 16}
DEFAULT_WINDOW_BATCH = 256
DEFAULT_TIMESTAMP_HOP_MS = 50.0


# --- windows -------------------------------------------------------------------------------------------


def window_counts(lengths: np.ndarray, length: int, hop: int) -> np.ndarray:
    """How many windows :func:`window_starts` gives each clip of ``lengths`` frames."""
    return -(-np.maximum(np.asarray(lengths) - length, 0) // hop) + 1


def nth_window_starts(lengths: np.ndarray, nth: np.ndarray, length: int, hop: int) -> np.ndarray:
    """The start of window ``nth`` of each clip, as :func:`window_starts` lists them."""
    return np.minimum(np.asarray(nth) * hop, np.maximum(np.asarray(lengths) - length, 0))


def window_starts(n_frames: int, length: int, hop: int) -> list[int]:
    """Starts of the sliding windows that cover a whole clip; the last one ends at the clip's end."""
    count = int(window_counts(np.array([n_frames]), length, hop)[0])
    return nth_window_starts(np.full(count, n_frames), np.arange(count), length, hop).tolist()


def window_index(starts: torch.Tensor, length: int, n_frames: torch.Tensor | int) -> torch.Tensor:
    """Frame indices ``[N, length]`` of windows from ``starts`` in clips of ``n_frames`` frames. A clip
    shorter than a window wraps around to its first frame, i.e. it is tiled along time; a valid start
    keeps longer clips from reaching their end, so the modulo leaves them alone."""
    if isinstance(n_frames, torch.Tensor):
        n_frames = n_frames.reshape(-1, 1)
    return (starts.reshape(-1, 1) + torch.arange(length, device=starts.device)) % n_frames


def clip_windows(mel: torch.Tensor, length: int, hop: int | None = None) -> tuple[torch.Tensor, list[int]]:
    """The windows ``[n, W, n_mels, length]`` of log-mels ``[n, n_mels, frames]`` (hop: the window
    length by default) and their starts."""
    n_frames = mel.shape[-1]
    starts = window_starts(n_frames, length, hop or length)
    index = window_index(torch.tensor(starts, device=mel.device), length, n_frames)
    return mel[..., index].transpose(1, 2), starts


def join_windows(windows: torch.Tensor, starts: Sequence[int], n_frames: int) -> torch.Tensor:
    """The log-mel ``[n_mels, n_frames]`` of one clip from its windows ``[W, n_mels, length]`` (the
    inverse of :func:`clip_windows`): every frame of the clip lies in some window."""
    mel = windows.new_empty(windows.shape[1], n_frames)
    for window, start in zip(windows, starts, strict=True):
        n = min(window.shape[-1], n_frames - start)
        mel[:, start : start + n] = window[:, :n]
    return mel


def clip_mean(values: torch.Tensor, clip: torch.Tensor, n_clips: int) -> torch.Tensor:
    """Average the rows of ``values`` that share a clip index: ``[windows, C] -> [n_clips, C]``."""
    sums = torch.zeros(n_clips, values.shape[1], device=values.device, dtype=values.dtype)
    sums.index_add_(0, clip, values)
    counts = torch.bincount(clip, minlength=n_clips).clamp_min(1).to(values.dtype)
    return sums / counts[:, None]


# --- frame sequences on a regular grid ------------------------------------------------------------------


def frame_stride(encoder: nn.Module, n_mels: int, patch_frames: int) -> tuple[int, int]:
    """Log-mel frames per frame of ``encoder.frames()``, and the frames' size, measured from shapes.

    ser-ssl's encoders downsample time by a fixed stride ``S`` (pooling with ``ceil_mode``, convolutions
    of stride 2 and padding 1), so ``L`` input frames give ``ceil(L / S)`` output frames and frame ``j``
    stands for input frames ``[j*S, (j+1)*S)``: ``S`` is one less than the shortest input that gives two
    frames (an encoder that gives one frame per window has ``S = patch_frames``). Runs in eval mode.
    """
    device = next(encoder.parameters(), torch.empty(0)).device

    def shape(length: int) -> tuple[int, int]:
        with torch.no_grad():
            out = encoder.frames(torch.zeros(1, 1, n_mels, length, device=device))
        return out.shape[1], out.shape[-1]

    with eval_mode(encoder):
        dim, out_frames = shape(patch_frames)
        lo, hi = 1, patch_frames  # the shortest input with two frames is in (lo, hi]
        while out_frames > 1 and hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if shape(mid)[1] > 1 else (mid, hi)
    if out_frames == 1:
        return patch_frames, dim
    stride = hi - 1
    if -(-patch_frames // stride) != out_frames:
        raise ValueError(
            f"{type(encoder).__name__}.frames() does not downsample time by a fixed stride ({patch_frames} "
            f"frames give {out_frames} frames, 2 frames need {hi}); timestamps cannot be placed on a grid"
        )
    return stride, dim


@dataclass(frozen=True)
class TimestampGrid:
    """Where frame sequences put frames, in log-mel frames (log-mel frame ``i`` is centred on sample
    ``i * hop_length``): frame ``k`` is centred at ``first + k * hop``.

    The encoder gives one frame per ``stride`` log-mel frames. A grid finer than that is ``phases =
    stride / hop`` interleaved passes: pass ``p`` runs the encoder on windows of ``patch_frames``
    starting ``p * hop`` frames after pass 0's, every ``per_window * stride`` frames, and keeps their
    ``per_window`` whole frames (a window's last, partial frame is dropped), so cost grows with
    ``phases``. Pass 0 starts ``lead`` frames before the sound, so that ``0 <= first < hop``.
    """

    stride: int  # log-mel frames per encoder frame
    hop: int  # log-mel frames between timestamps; divides stride
    patch_frames: int

    @classmethod
    def finest(cls, stride: int, patch_frames: int, hop_ms: float, ms_per_frame: float) -> TimestampGrid:
        """The grid with the largest hop that divides ``stride`` and is at most ``hop_ms``."""
        if not hop_ms >= ms_per_frame:
            raise ValueError(
                f"timestamp_hop_ms must be at least one log-mel frame ({ms_per_frame:.3f} ms), got {hop_ms}"
            )
        hop = max(d for d in range(1, stride + 1) if stride % d == 0 and d * ms_per_frame <= hop_ms)
        return cls(stride, hop, patch_frames)

    @property
    def phases(self) -> int:
        return self.stride // self.hop

    @property
    def per_window(self) -> int:
        """Whole encoder frames per window."""
        return max(1, self.patch_frames // self.stride)

    @property
    def lead(self) -> int:
        """Log-mel frames of silence before the sound, where the first window starts."""
        return self.hop * ((self.stride - 1) // (2 * self.hop))

    @property
    def first(self) -> float:
        """Centre of frame 0, in ``[0, hop)``: encoder frame ``j`` of a window centres on ``j*stride +
        (stride - 1) / 2``."""
        return (self.stride - 1) / 2 - self.lead

    def count(self, end: Fraction | int) -> int:
        """Grid frames centred before ``end`` (in log-mel frames, exact: no frame lands on or past it),
        at least one."""
        first = Fraction(self.stride - 1, 2) - self.lead
        return max(1, math.ceil((Fraction(end) - first) / self.hop))

    def centres(self, count: int) -> torch.Tensor:
        """Centres of the first ``count`` frames, in log-mel frames (float64)."""
        return self.first + self.hop * torch.arange(count, dtype=torch.float64)


def grid_frames(
    encoder: nn.Module,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    mel: torch.Tensor,
    grid: TimestampGrid,
    count: int,
    silence: float,
) -> torch.Tensor:
    """Frame embeddings ``[n, count, D]`` of log-mels ``[n, n_mels, frames]`` on ``grid``.

    Windows reaching past either end of the sound see ``silence`` there (the log-mel of digital silence):
    a frame is placed in time, so a frame near the end must not see the sound's start again, as the
    tiling of short clips in training would show it. A frame therefore does not depend on how long the
    sound goes on past its window. ``prepare`` turns log-mel windows ``[B, 1, n_mels, patch]`` into the
    encoder's input (the input standardisation).
    """
    n = mel.shape[0]
    per_phase = -(-count // grid.phases)  # grid frames each pass must give
    n_windows = -(-per_phase // grid.per_window)  # windows per pass
    step = grid.per_window * grid.stride
    length = (grid.phases - 1) * grid.hop + (n_windows - 1) * step + grid.patch_frames
    pad = torch.full_like(mel[..., :1], silence)
    padded = torch.cat(
        [pad.expand(-1, -1, grid.lead), mel, pad.expand(-1, -1, max(0, length - grid.lead - mel.shape[-1]))],
        dim=-1,
    )
    starts = torch.tensor(
        [p * grid.hop + w * step for p in range(grid.phases) for w in range(n_windows)], device=mel.device
    )
    windows = padded[..., window_index(starts, grid.patch_frames, padded.shape[-1])]  # [n, M, P*W, patch]
    x = prepare(windows.transpose(1, 2).flatten(0, 1).unsqueeze(1))
    batch = WINDOW_BATCH.get(x.device.type, DEFAULT_WINDOW_BATCH)
    frames = torch.cat([encoder.frames(chunk) for chunk in x.split(batch)])  # [n*P*W, D, T']
    frames = frames[..., : grid.per_window].reshape(n, grid.phases, n_windows, -1, grid.per_window)
    # grid frame k = (w * per_window + j) * phases + p
    return frames.permute(0, 2, 4, 1, 3).reshape(n, -1, frames.shape[3])[:, :count].float()


# --- the model: audio in, embeddings out ------------------------------------------------------------


class HEARModel(nn.Module):
    """Log-mel, standardisation and encoder, with the attributes the HEAR API asks for.

    ``timestamp_hop_ms`` (50 by default, settable after loading) bounds the interval between timestamp
    embeddings: the grid takes the largest hop that divides the encoder's stride and is not longer
    (:attr:`timestamp_grid`), at a cost of about ``stride / hop`` encoder passes. A larger value (say
    1000) gives one frame per encoder frame (160 ms for ``VGGLike``) at the cost of one pass.

    Args:
        encoder: a ser-ssl encoder (``forward`` and ``frames``, ``embed_dim``).
        normalizer: the pretraining's per-band statistics.
        features: the pretraining's log-mel settings.
        patch_frames: the window length in log-mel frames.
    """

    def __init__(
        self, encoder: nn.Module, normalizer: Standardize, features: LogMelConfig, patch_frames: int
    ) -> None:
        super().__init__()
        self.logmel = LogMel(features)
        self.normalizer = normalizer
        self.encoder = encoder
        self.patch_frames = patch_frames
        self.encoder_stride, frame_dim = frame_stride(encoder, features.n_mels, patch_frames)
        self.timestamp_hop_ms: float = DEFAULT_TIMESTAMP_HOP_MS
        self.sample_rate: int = features.sample_rate
        self.scene_embedding_size: int = encoder.embed_dim
        self.timestamp_embedding_size: int = int(frame_dim)

    @property
    def ms_per_frame(self) -> float:
        """Milliseconds between log-mel frames."""
        return 1000.0 * self.logmel.config.hop_length / self.sample_rate

    @property
    def timestamp_grid(self) -> TimestampGrid:
        """The grid of :meth:`timestamp_embeddings` for the current ``timestamp_hop_ms``."""
        return TimestampGrid.finest(
            self.encoder_stride, self.patch_frames, self.timestamp_hop_ms, self.ms_per_frame
        )

    def _mel(self, audio: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[n_sounds, n_mels, frames]`` as the feature cache holds it."""
        if audio.ndim != 2 or audio.shape[-1] == 0:
            raise ValueError(
                f"audio must be [n_sounds, n_samples] with n_samples > 0, got {tuple(audio.shape)}"
            )
        return self.logmel(audio.float())

    def windows(self, audio: torch.Tensor) -> torch.Tensor:
        """Standardised windows ``[n_sounds, W, 1, n_mels, patch_frames]`` of the scene embeddings
        (:func:`~ser_ssl.inference.clip_windows`, hop = window length)."""
        windows, _ = clip_windows(self._mel(audio), self.patch_frames)
        return self.normalizer(windows.unsqueeze(2))

    def window_embeddings(self, audio: torch.Tensor) -> torch.Tensor:
        """``[n_sounds, windows, D]``: the encoder's embedding of each of :meth:`windows`."""
        x = self.windows(audio)
        n, w = x.shape[:2]
        return self.encoder(x.flatten(0, 1)).view(n, w, -1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Scene embeddings ``[n_sounds, D]``: the mean over the sound's windows."""
        return self.window_embeddings(audio).mean(dim=1)

    def timestamp_embeddings(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame embeddings ``[n_sounds, T, D]`` and their centres ``[n_sounds, T]`` in milliseconds, on
        :attr:`timestamp_grid` (:func:`~ser_ssl.inference.grid_frames`: windows past the sound's ends
        see silence, which is also what HEAR's baselines pad audio with). Every grid frame centred
        before the sound's end is returned; a sound shorter than ``first`` gets one frame."""
        grid = self.timestamp_grid
        count = grid.count(Fraction(audio.shape[-1], self.logmel.config.hop_length))
        silence = math.log10(self.logmel.config.log_offset)
        # without the frames LogMel adds when it tiles a sound shorter than one FFT (a centred STFT
        # has 1 + n_samples // hop_length frames of the sound's own)
        mel = self._mel(audio)[..., : 1 + audio.shape[-1] // self.logmel.config.hop_length]
        seq = grid_frames(self.encoder, self.normalizer, mel, grid, count, silence)
        stamps = (grid.centres(count) * self.ms_per_frame).to(device=audio.device, dtype=torch.float32)
        return seq, stamps.expand(len(seq), -1).contiguous()


# --- patch embeddings -----------------------------------------------------------------------------------


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode; each submodule's own mode is restored afterwards (a frozen encoder's
    BatchNorm stays in eval mode while the rest of a model trains)."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes.items():
            m.train(training)


@torch.no_grad()
def embed_patches(
    encoder: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    prepare: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device | str,
    context: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised embeddings (float32) and labels of ``{"patch", "target"}`` batches of raw log-mel
    patches, on ``device``: ``prepare`` (the input standardisation) then ``encoder`` in
    :func:`eval_mode`, each call inside ``context()`` (e.g. the trainer's precision)."""
    embeddings, labels = [], []
    with eval_mode(encoder):
        for batch in batches:
            x = prepare(batch["patch"].to(device, non_blocking=True))
            with context():
                h = encoder(x)
            embeddings.append(F.normalize(h.float(), dim=1))
            labels.append(batch["target"].to(device, torch.long))
    if not embeddings:
        raise ValueError("no batch to embed")
    return torch.cat(embeddings), torch.cat(labels)

"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) over a ser-ssl pretraining checkpoint.

    from ser_ssl import hear
    model = hear.load_model("runs/pretrain/checkpoints/last.ckpt")
    scene = hear.get_scene_embeddings(audio, model)                   # [n_sounds, D]
    frames, timestamps = hear.get_timestamp_embeddings(audio, model)  # [n_sounds, T, D], [n_sounds, T] (ms)

``audio`` is ``[n_sounds, n_samples]`` float at ``model.sample_rate``. The model is ``ser-ssl
predict``'s pipeline (:class:`~ser_ssl.tasks.Embed`): log-mel with the pretraining's settings, its
per-band standardisation, the encoder on windows of ``patch_frames``.

Scene embeddings are the mean of the encoder's embeddings of non-overlapping windows (the last one ends
at the sound's end; a sound shorter than a window is tiled, as in training), as in the export: they
match it up to the float16 rounding of the export's cached log-mel.

Timestamp embeddings lie on one regular grid, ``t_k = t_0 + k * hop`` milliseconds with
``0 <= t_0 < hop``, whatever the sound's length (see :class:`TimestampGrid`): ``hop`` is at most
``model.timestamp_hop_ms`` (50 ms by default, what HEAR recommends for event tasks; 39.9 ms with the
default 22,050 Hz log-mel of hop 220). They differ from the export's frame sequence, whose last window
is aligned to the clip's end.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ser_ssl.audio import LogMel, LogMelConfig, Standardize
from ser_ssl.data.views import window_starts
from ser_ssl.tasks.checkpoint import read_pretrained

DEFAULT_CHECKPOINT = "runs/pretrain/checkpoints/last.ckpt"
DEFAULT_PATCH_FRAMES = 101
DEFAULT_TIMESTAMP_HOP_MS = 50.0
# windows per encoder call of get_timestamp_embeddings: bounds memory on long sounds; on the CPU, small
# batches stay in cache (16 run VGGLike about 1.5 times faster per window than 256 on one core)
WINDOW_BATCH = {"cpu": 16}
DEFAULT_WINDOW_BATCH = 256


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

    was_training = encoder.training
    encoder.eval()
    try:
        dim, out_frames = shape(patch_frames)
        lo, hi = 1, patch_frames  # the shortest input with two frames is in (lo, hi]
        while out_frames > 1 and hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if shape(mid)[1] > 1 else (mid, hi)
    finally:
        encoder.train(was_training)
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
    """Where :meth:`HEARModel.timestamp_embeddings` puts frames, in log-mel frames (log-mel frame ``i``
    is centred on sample ``i * hop_length``): frame ``k`` is centred at ``first + k * hop``.

    The encoder gives one frame per ``stride`` log-mel frames. A grid finer than that is ``phases =
    stride / hop`` interleaved passes: pass ``p`` runs the encoder on windows of ``patch_frames``
    starting ``p * hop`` frames after pass 0's, every ``per_window * stride`` frames, and keeps their
    ``per_window`` whole frames (a window's last, partial frame is dropped), so cost grows with
    ``phases``. Pass 0 starts ``lead`` frames before the sound, so that ``0 <= first < hop``.
    """

    stride: int  # log-mel frames per encoder frame
    hop: int  # log-mel frames between timestamps; divides stride
    patch_frames: int

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

    def count(self, n_samples: int, hop_length: int) -> int:
        """Grid frames of a sound of ``n_samples`` samples: those centred before its end (at least one)."""
        first = Fraction(self.stride - 1, 2) - self.lead  # exact: no frame lands on or past the end
        return max(1, math.ceil((n_samples - first * hop_length) / (self.hop * hop_length)))


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
        if not self.timestamp_hop_ms >= self.ms_per_frame:
            raise ValueError(
                f"timestamp_hop_ms must be at least one log-mel frame ({self.ms_per_frame:.3f} ms), "
                f"got {self.timestamp_hop_ms}"
            )
        stride = self.encoder_stride
        hop = max(
            d
            for d in range(1, stride + 1)
            if stride % d == 0 and d * self.ms_per_frame <= self.timestamp_hop_ms
        )
        return TimestampGrid(stride, hop, self.patch_frames)

    def _mel(self, audio: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Log-mel ``[n_sounds, n_mels, frames]`` and how many of its frames are the sound's own (fewer
        than computed when LogMel tiled a sound shorter than one FFT)."""
        if audio.ndim != 2 or audio.shape[-1] == 0:
            raise ValueError(
                f"audio must be [n_sounds, n_samples] with n_samples > 0, got {tuple(audio.shape)}"
            )
        mel = self.logmel(audio.float())
        real_frames = min(mel.shape[-1], 1 + audio.shape[-1] // self.logmel.config.hop_length)  # centred STFT
        return mel, real_frames

    def windows(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[int], int]:
        """Standardised windows ``[n_sounds, W, 1, n_mels, patch_frames]`` of the scene embeddings,
        their starts, and the number of log-mel frames of the sound itself."""
        mel, real_frames = self._mel(audio)
        n_frames = mel.shape[-1]
        if n_frames < self.patch_frames:  # tiled along time, like the training patches
            mel = mel.repeat(1, 1, -(-self.patch_frames // n_frames))[..., : self.patch_frames]
        starts = window_starts(n_frames, self.patch_frames, self.patch_frames)
        x = torch.stack([mel[..., s : s + self.patch_frames] for s in starts], dim=1)
        return self.normalizer(x.unsqueeze(2)), starts, real_frames

    def window_embeddings(self, audio: torch.Tensor) -> torch.Tensor:
        """``[n_sounds, windows, D]``: the encoder's embedding of each of :meth:`windows`."""
        x, _, _ = self.windows(audio)
        n, w = x.shape[:2]
        return self.encoder(x.flatten(0, 1)).view(n, w, -1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Scene embeddings ``[n_sounds, D]``: the mean over the sound's windows."""
        return self.window_embeddings(audio).mean(dim=1)

    def timestamp_embeddings(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame embeddings ``[n_sounds, T, D]`` and their centres ``[n_sounds, T]`` in milliseconds, on
        :attr:`timestamp_grid`.

        Windows reaching past either end of the sound see silence there: the log-mel of digital
        silence, ``log10(log_offset)``, standardised. HEAR places frames in time, so a frame near the
        end must not see the sound's start again, as the tiling of short clips in training would show
        it; and silence is what HEAR's baselines pad audio with. A frame therefore does not depend on
        how long the sound goes on past its window, and the grid does not depend on the sound's length.
        Every grid frame centred before the sound's end is returned; a sound shorter than ``first``
        gets one frame.
        """
        grid = self.timestamp_grid
        mel, real_frames = self._mel(audio)
        n = mel.shape[0]
        k = grid.count(audio.shape[-1], self.logmel.config.hop_length)
        per_phase = -(-k // grid.phases)  # grid frames each pass must give
        n_windows = -(-per_phase // grid.per_window)  # windows per pass
        step = grid.per_window * grid.stride
        length = (grid.phases - 1) * grid.hop + (n_windows - 1) * step + self.patch_frames
        silence = torch.full_like(mel[..., :1], math.log10(self.logmel.config.log_offset))
        padded = torch.cat(
            [
                silence.expand(-1, -1, grid.lead),
                mel[..., :real_frames],
                silence.expand(-1, -1, max(0, length - grid.lead - real_frames)),
            ],
            dim=-1,
        )
        starts = [p * grid.hop + w * step for p in range(grid.phases) for w in range(n_windows)]
        x = torch.stack(
            [padded[..., s : s + self.patch_frames] for s in starts], dim=1
        )  # [n, phases * windows, n_mels, patch_frames]
        x = self.normalizer(x.flatten(0, 1).unsqueeze(1))
        batch = WINDOW_BATCH.get(x.device.type, DEFAULT_WINDOW_BATCH)
        frames = torch.cat([self.encoder.frames(chunk) for chunk in x.split(batch)])  # [n*P*W, D, T']
        frames = frames[..., : grid.per_window].reshape(n, grid.phases, n_windows, -1, grid.per_window)
        # grid frame k = (w * per_window + j) * phases + p
        seq = frames.permute(0, 2, 4, 1, 3).reshape(n, -1, frames.shape[3])[:, :k]
        centres = grid.first + grid.hop * torch.arange(k, dtype=torch.float64)
        stamps = (centres * self.ms_per_frame).to(device=audio.device, dtype=torch.float32)
        return seq.float(), stamps.expand(n, -1).contiguous()


def load_model(model_file_path: str = "", **kwargs: Any) -> HEARModel:
    """The HEAR model of a ser-ssl pretraining checkpoint (``""``: ``runs/pretrain/checkpoints/last.ckpt``).

    Features and window length come from the checkpoint's recorded data module settings (written by
    ``ser-ssl fit``); a checkpoint without them falls back to :class:`LogMelConfig` defaults and 101
    frames, with a warning. A file that is not a pretraining checkpoint raises
    :class:`~ser_ssl.tasks.checkpoint.CheckpointError`. Returned in eval mode, on the CPU. HEAR's
    ``load_model`` takes no options: set ``model.timestamp_hop_ms`` on the returned model instead.
    """
    if kwargs:
        raise TypeError(
            f"load_model takes no options besides model_file_path (HEAR's API), got {sorted(kwargs)}; "
            "set model.timestamp_hop_ms on the returned model for another timestamp interval"
        )
    path = Path(model_file_path or DEFAULT_CHECKPOINT)
    pretrained = read_pretrained(path)
    features, patch_frames = pretrained.features, pretrained.patch_frames
    if features is None or patch_frames is None:
        warnings.warn(
            f"{path} does not record its data settings (not written by `ser-ssl fit`?); assuming the "
            "default log-mel settings and 101-frame windows",
            stacklevel=2,
        )
        features = features or LogMelConfig(n_mels=pretrained.stats["mean"].shape[0])
        patch_frames = patch_frames or DEFAULT_PATCH_FRAMES
    normalizer = Standardize(features.n_mels)
    normalizer.load_state_dict(pretrained.stats)
    return HEARModel(pretrained.encoder, normalizer, features, patch_frames).eval()


def _prepare(audio: torch.Tensor, model: HEARModel) -> None:
    """Eval mode, on the audio's device (the model moves if it is elsewhere)."""
    model.eval()
    if model.normalizer.mean.device != audio.device:
        model.to(audio.device)


@torch.no_grad()
def get_scene_embeddings(audio: torch.Tensor, model: HEARModel) -> torch.Tensor:
    """``[n_sounds, scene_embedding_size]`` float32 embeddings of ``[n_sounds, n_samples]`` audio."""
    _prepare(audio, model)
    return model(audio)


@torch.no_grad()
def get_timestamp_embeddings(audio: torch.Tensor, model: HEARModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``([n_sounds, T, timestamp_embedding_size], [n_sounds, T])``: frame embeddings and their
    centres in milliseconds from the start of the sound, on ``model.timestamp_grid``."""
    _prepare(audio, model)
    return model.timestamp_embeddings(audio)

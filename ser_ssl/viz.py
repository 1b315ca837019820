"""Figures of what the model sees and learns: SimCLR views step by step, whole clips, evaluation results,
clip embeddings and a finished run's training curves.

Figures are built with matplotlib's object-oriented API on an Agg canvas, never through ``pyplot``: no
GUI backend is touched, the caller's backend stays as it was, and pyplot keeps no reference to them
(nothing to close; a figure is freed with its last reference). Loggers take :func:`figure_to_array`;
notebooks display figures directly.
"""

from __future__ import annotations

import csv
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from ser_ssl.augment import BatchTransform
from ser_ssl.errors import MissingFileError

if TYPE_CHECKING:
    import lightning as L

    from ser_ssl.augment.compose import Stage
    from ser_ssl.tasks import SimCLR

ArrayLike = torch.Tensor | np.ndarray
CMAP = "magma"


def _new_figure(width: float, height: float, **kwargs: Any) -> Figure:
    """A figure on its own Agg canvas: renders headless, without pyplot's global figure registry."""
    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _image(spec: ArrayLike) -> np.ndarray:
    """``[n_mels, frames]`` or ``[1, n_mels, frames]`` -> a float ``[n_mels, frames]`` array."""
    a = spec.detach().float().cpu().numpy() if isinstance(spec, torch.Tensor) else np.asarray(spec, float)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"expected a spectrogram [n_mels, frames] or [1, n_mels, frames], got {a.shape}")
    return a


def color_range(*specs: ArrayLike) -> tuple[float, float]:
    """The (min, max) of finite values over ``specs``: one colour scale for images that are compared."""
    values = np.concatenate([_image(s).ravel() for s in specs])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    return float(values.min()), float(values.max())


def show_spectrogram(
    ax: Axes,
    spec: ArrayLike,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = CMAP,
) -> AxesImage:
    """Draw a ``[n_mels, frames]`` (or ``[1, n_mels, frames]``) spectrogram with low bands at the bottom.

    Pass the same ``vmin``/``vmax`` (e.g. from :func:`color_range`) to images that should be compared.
    Returns the image so the caller can add a colour bar; the figure is ``ax.figure``.
    """
    image = ax.imshow(
        _image(spec), origin="lower", aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax
    )
    if title is not None:
        ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    return image


# ---------------------------------------------------------------------------------------------------------
# SimCLR views, step by step


@dataclass
class StageRecord:
    """One augmentation step of one view: its name, the drawn parameters as a title, its output."""

    name: str
    title: str
    output: torch.Tensor


@dataclass
class ViewRecord:
    """Everything :meth:`SimCLR.make_views` computed for one view of one clip, ``[1, n_mels, frames]`` each.

    ``lam`` is the drawn mix-back λ (``None`` with mix-back off);
    ``index`` is the clip's position in the training dataset when the batch carries it.
    """

    clip: int
    view: int
    index: int | None
    patch: torch.Tensor
    background: torch.Tensor
    mixed: torch.Tensor
    lam: float | None
    mixback: bool
    standardised: torch.Tensor
    stages: list[StageRecord] = field(default_factory=list)

    @property
    def final(self) -> torch.Tensor:
        """The view the encoder gets (the last stage, or the standardised patch without augmentation)."""
        return self.stages[-1].output if self.stages else self.standardised


def _keep(x: torch.Tensor) -> torch.Tensor:
    """A CPU copy of one sample, so records do not hold the whole batch's tensors alive."""
    return x.detach().cpu().clone()


def _stage_records(stages: Sequence[Stage], rows: Sequence[int]) -> list[list[StageRecord]]:
    """Per row in ``rows``: every transform's output with its drawn parameters as a title."""
    records = []
    for j in rows:
        row = []
        for stage in stages[1:]:  # [0] is the input, the standardised patch itself
            if isinstance(stage.transform, BatchTransform) and stage.params is not None:
                title = stage.transform.describe(stage.params, j)
            else:
                title = stage.name
            row.append(StageRecord(stage.name, title, _keep(stage.output[j])))
        records.append(row)
    return records


@torch.no_grad()
def record_views(model: SimCLR, batch: dict[str, torch.Tensor], clips: int = 4) -> list[ViewRecord]:
    """Every intermediate of ``model.make_views(batch)`` (:meth:`SimCLR.view_stages`) for the first
    ``clips`` clips, clip by clip, view by view.

    The whole batch goes through every step, so under the same RNG state the records'
    :attr:`ViewRecord.final` equal ``make_views(batch)[2 * clip + view]``.
    """
    device = model.normalizer.mean.device
    views = batch["views"].to(device)
    backgrounds = batch["backgrounds"].to(device)
    n, v = views.shape[:2]
    clips = min(clips, n)
    made = model.view_stages({"views": views, "backgrounds": backgrounds})
    if len(made.augment) == 1:  # one pipeline over all views, clip by clip
        flat = _stage_records(made.augment[0], range(clips * v))
        stages = [[flat[i * v + k] for k in range(v)] for i in range(clips)]
    else:
        first, second = (_stage_records(pipeline, range(clips)) for pipeline in made.augment)
        stages = [[first[i], second[i]] for i in range(clips)]
    mixed = views if made.mixed is None else made.mixed
    index = batch.get("index")
    records = []
    for i in range(clips):
        for k in range(v):
            records.append(
                ViewRecord(
                    clip=i,
                    view=k,
                    index=None if index is None else int(index[i]),
                    patch=_keep(views[i, k]),
                    background=_keep(backgrounds[i, k]),
                    mixed=_keep(mixed[i, k]),
                    lam=None if made.lam is None else float(made.lam[i, k]),
                    mixback=model.mixback is not None,
                    standardised=_keep(made.standardised[i, k]),
                    stages=stages[i][k],
                )
            )
    return records


VIEWS_TITLE = (
    "SimCLR views, one row per clip and view. Colour scales shared per row: log10 mel (patch, "
    "background, mixed) and standardised (standardised and augmented)"
)


def _view_row(r: ViewRecord) -> list[tuple[torch.Tensor, str, tuple[float, float]]]:
    """The images of one view's row with their titles and colour ranges, as both view figures show them."""
    raw = color_range(r.patch, r.background, r.mixed)
    std = color_range(r.standardised, *(s.output for s in r.stages))
    clip = f"clip {r.clip}" + (f" (#{r.index})" if r.index is not None else "")
    mixed_title = f"mixed λ={r.lam:.3f}" if r.mixback else "mix-back off"
    return [
        (r.patch, f"{clip} view {r.view + 1}: patch", raw),
        (r.background, "background (other clip)", raw),
        (r.mixed, mixed_title, raw),
        (r.standardised, "standardised", std),
        *((stage.output, stage.title, std) for stage in r.stages),
    ]


def plot_views(records: Sequence[ViewRecord]) -> Figure:
    """One row per clip and view: patch, background, mixed, standardised, then every augmentation stage.

    Titles carry the drawn parameters. Within a row, the three log-mel images share one colour scale
    and the standardised image and the stages another, so a change of colour is a change of value.
    Only the outer images carry ticks, and the axes are neither shared nor laid out by a layout engine:
    both cost seconds per figure at 50+ images.
    """
    if not records:
        raise ValueError("no views to plot")
    rows, columns = len(records), 4 + max(len(r.stages) for r in records)
    # cell sizes and margins in inches: room for two-line titles above each image
    width, height, gap_w, gap_h, left, right, top, bottom = 1.9, 1.4, 0.15, 0.5, 0.5, 0.1, 0.75, 0.45
    fig_w = left + columns * width + (columns - 1) * gap_w + right
    fig_h = top + rows * height + (rows - 1) * gap_h + bottom
    fig = _new_figure(fig_w, fig_h)
    fig.subplots_adjust(
        left=left / fig_w,
        right=1 - right / fig_w,
        bottom=bottom / fig_h,
        top=1 - top / fig_h,
        wspace=gap_w / width,
        hspace=gap_h / height,
    )
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, (row, r) in enumerate(zip(axes, records, strict=True)):
        images = _view_row(r)
        for j, ax in enumerate(row):
            if j >= len(images):
                ax.set_axis_off()
                continue
            spec, title, scale = images[j]
            show_spectrogram(ax, spec, textwrap.fill(title, 32), *scale)
            if j > 0:
                ax.set_yticks([])
            else:
                ax.set_ylabel("mel band", fontsize=7)
            if i < rows - 1:
                ax.set_xticks([])
            else:
                ax.set_xlabel("frame", fontsize=7)
    fig.suptitle(
        VIEWS_TITLE,
        y=1 - 0.1 / fig_h,
        va="top",
        fontsize=9,
    )
    return fig


class _Pixels(Artist):
    """An RGB image the size of the figure, blitted as it is: unlike ``figimage``, no normalisation and
    no resampling pass, which for a few megapixels cost more than drawing everything else."""

    def __init__(self, rgb: np.ndarray) -> None:
        super().__init__()
        alpha = np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)
        self._rgba = np.ascontiguousarray(np.concatenate([rgb, alpha], axis=-1)[::-1])  # Agg: row 0 at bottom

    def draw(self, renderer: Any) -> None:
        gc = renderer.new_gc()
        renderer.draw_image(gc, 0, 0, self._rgba)
        gc.restore()


def plot_views_mosaic(records: Sequence[ViewRecord], zoom: int = 1) -> Figure:
    """What :func:`plot_views` shows, as one image without axes: the cheap version, for dashboards.

    :func:`plot_views` draws one Axes per image, and building and rendering matplotlib Axes costs about
    a second for four clips (56 images), every time a callback logs them. Here the spectrograms are
    coloured into one RGB mosaic (each bin ``zoom`` x ``zoom`` pixels, low bands at the bottom) blitted
    pixel for pixel, under plain-text titles: the same rows, columns, titles and per-row colour scales,
    without ticks, several times faster.
    """
    if not records:
        raise ValueError("no views to plot")
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    if zoom < 1:
        raise ValueError(f"zoom must be >= 1, got {zoom}")
    rows = [_view_row(r) for r in records]
    columns = max(len(row) for row in rows)
    cell_h = zoom * max(_image(spec).shape[0] for row in rows for spec, _, _ in row)
    cell_w = zoom * max(_image(spec).shape[1] for row in rows for spec, _, _ in row)
    chars = max(12, int(cell_w / 5.2))  # characters per title line at 7 pt and 100 dpi
    lines = 2 if cell_w >= 150 else 3
    pad, gap, line_h = 8, 10, 10  # pixels
    width = 2 * pad + columns * cell_w + (columns - 1) * gap
    header = textwrap.wrap(VIEWS_TITLE + " (mel band up, frame right)", int(width / 6.0))
    header_h, title_h = 8 + 12 * len(header), 4 + line_h * lines
    height = header_h + len(rows) * (title_h + cell_h) + (len(rows) - 1) * gap + pad
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    fig = _new_figure(width / 100, height / 100, dpi=100)
    cmap = colormaps[CMAP]
    for i, row in enumerate(rows):
        top = header_h + i * (title_h + cell_h + gap) + title_h
        for j, (spec, title, (vmin, vmax)) in enumerate(row):
            rgb = cmap(Normalize(vmin, vmax)(np.flipud(_image(spec))), bytes=True)[..., :3]
            rgb = rgb.repeat(zoom, 0).repeat(zoom, 1)  # colour first: zoom**2 fewer pixels to map
            left = pad + j * (cell_w + gap)
            canvas[top : top + rgb.shape[0], left : left + rgb.shape[1]] = rgb
            text = "\n".join(textwrap.wrap(title, chars)[:lines])
            fig.text((left + 1) / width, 1 - (top - 2) / height, text, fontsize=7, va="bottom")
    fig.add_artist(_Pixels(canvas))
    fig.text(pad / width, 1 - 6 / height, "\n".join(header), fontsize=8, va="top", linespacing=1.1)
    return fig


# ---------------------------------------------------------------------------------------------------------
# whole clips


def locate_patch(clip: ArrayLike, patch: ArrayLike) -> int | None:
    """The start frame at which ``patch`` was cut from ``clip`` (both ``[n_mels, frames]``), or ``None``.

    Patches are exact slices of the cache, so the first exact match is where the patch came from (a clip
    shorter than the patch was tiled from frame 0). Lets a notebook mark patch positions without the
    data loader returning them.
    """
    c, p = _image(clip), _image(patch)
    length = p.shape[1]
    if c.shape[1] <= length:  # the whole clip, tiled along time to the patch length
        tiled = np.tile(c, (1, -(-length // max(c.shape[1], 1))))[:, :length]
        return 0 if tiled.shape == p.shape and np.array_equal(tiled, p) else None
    windows = np.lib.stride_tricks.sliding_window_view(c, length, axis=1)  # [M, T - L + 1, L]
    hits = np.flatnonzero((windows == p[:, None, :]).all(axis=(0, 2)))
    return int(hits[0]) if hits.size else None


def plot_clip(
    spec: ArrayLike,
    starts: Sequence[int | None],
    patch_frames: int,
    title: str | None = None,
) -> Figure:
    """A whole clip's log-mel ``[n_mels, frames]`` with the patches starting at ``starts`` boxed.

    ``None`` starts are skipped; boxes are labelled ``view 1``, ``view 2``, ... in order. A clip shorter
    than a patch is tiled by the data loader, so its box runs past the clip's end.
    """
    image = _image(spec)
    n_mels, frames = image.shape
    fig = _new_figure(max(6.0, min(14.0, frames / 60)), 2.6, layout="constrained")
    ax = fig.subplots()
    im = show_spectrogram(ax, image, title)
    fig.colorbar(im, ax=ax, label="log10 mel", pad=0.01)
    colours = ["tab:cyan", "tab:green", "tab:orange", "tab:pink"]
    for k, start in enumerate(starts):
        if start is None:
            continue
        colour = colours[k % len(colours)]
        inset = k * max(1.0, n_mels / 50)  # overlapping boxes of different views stay apart
        box = Rectangle((start - 0.5, inset - 0.5), patch_frames, n_mels - 2 * inset, linewidth=1.5)
        box.set(edgecolor=colour, facecolor=(*to_rgb(colour), 0.12))
        ax.add_patch(box)
        ax.text(start + 1, n_mels * (0.95 - 0.1 * k), f"view {k + 1}", color=colour, fontsize=7, va="top")
    ax.set_xlim(-0.5, max(frames, max((s + patch_frames for s in starts if s is not None), default=0)) - 0.5)
    ax.set_xlabel("frame", fontsize=7)
    ax.set_ylabel("mel band", fontsize=7)
    return fig


# ---------------------------------------------------------------------------------------------------------
# evaluation results (for probe callbacks)


def plot_confusion(
    matrix: ArrayLike,
    classes: Sequence[str],
    normalize: bool = False,
    title: str | None = None,
    hide_zeros: bool = False,
) -> Figure:
    """Confusion matrix, true classes as rows; ``normalize`` divides each row by its count (recall).

    Cells are annotated for up to 30 classes; beyond that the colours alone stay readable.
    ``hide_zeros`` leaves empty cells blank: the confusions stand out, and a dashboard callback renders
    a few texts instead of k² (each costs about a millisecond).
    """
    m = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    m = m.astype(float)
    k = len(classes)
    if m.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {m.shape} does not match {k} classes")
    if normalize:
        m = m / np.maximum(m.sum(1, keepdims=True), 1e-12)
    size = min(3.0 + 0.35 * k, 20.0)
    fig = _new_figure(size + 1.0, size, layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    few = k <= 10
    ax.set_xticks(range(k), classes, rotation=45 if few else 90, ha="right" if few else "center", fontsize=7)
    ax.set_yticks(range(k), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    if k <= 30:
        fontsize = 8 if k <= 10 else 6
        threshold = (m.max() if m.size else 0) / 2
        for (i, j), value in np.ndenumerate(m):
            if hide_zeros and value == 0:
                continue
            text = f"{value:.2f}" if normalize else f"{value:g}"
            colour = "white" if value > threshold else "black"
            cell = ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=colour)
            cell.set_in_layout(False)  # inside the axes anyway; measuring k² texts doubled the render time
    return fig


def plot_per_class(values: ArrayLike | Sequence[float], classes: Sequence[str], title: str) -> Figure:
    """Horizontal bars of one value per class (e.g. recall), in the given class order, with their mean.

    The order is kept (not sorted) so figures from successive epochs line up class by class.
    """
    v = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    if v.shape != (len(classes),):
        raise ValueError(f"{v.shape[0] if v.ndim else 0} values for {len(classes)} classes")
    fig = _new_figure(6.0, 1.0 + 0.22 * len(classes), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(classes))
    ax.barh(y, v, color="tab:blue")
    ax.set_yticks(y, classes, fontsize=7)
    ax.invert_yaxis()  # first class on top
    mean = float(np.nanmean(v)) if v.size else float("nan")
    ax.axvline(mean, color="tab:red", linestyle="--", linewidth=1, label=f"mean {mean:.3f}")
    for yi, vi in zip(y, v, strict=True):
        ax.text(vi, yi, f" {vi:.2f}", va="center", fontsize=6)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` to an ``(H, W, 3)`` uint8 RGB array, the image format of W&B and TensorBoard."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    with warnings.catch_warnings():
        # class names in a script the default font lacks (CJK, ...) are drawn as boxes, at every
        # validation; the CSV files beside the images keep the names
        warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font")
        canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# ---------------------------------------------------------------------------------------------------------
# embeddings (for notebooks/embeddings.ipynb)


def _class_colours(labels: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Sorted classes and a colour each: tab10/tab20 while they suffice, evenly spaced hues beyond."""
    from matplotlib import colormaps

    classes = sorted(set(labels))
    k = len(classes)
    if k <= 10:
        colours = [colormaps["tab10"](i) for i in range(k)]
    elif k <= 20:
        colours = [colormaps["tab20"](i) for i in range(k)]
    else:
        colours = [colormaps["hsv"](i / k) for i in range(k)]
    return classes, dict(zip(classes, colours, strict=True))


def plot_embedding_2d(
    points: ArrayLike, labels: Sequence[str] | None = None, title: str | None = None
) -> Figure:
    """Scatter of ``[N, 2]`` points (e.g. a PCA of clip embeddings), one colour per class.

    Classes are sorted so a class keeps its colour across figures of the same data; unlabelled
    points (``labels=None`` or ``""``) are grey. The legend sits outside the axes so it hides no point.
    """
    p = (
        points.detach().float().cpu().numpy()
        if isinstance(points, torch.Tensor)
        else np.asarray(points, float)
    )
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"expected points of shape [N, 2], got {p.shape}")
    labels = [""] * len(p) if labels is None else [str(label) for label in labels]
    if len(labels) != len(p):
        raise ValueError(f"{len(labels)} labels for {len(p)} points")
    classes, colours = _class_colours([label for label in labels if label])
    fig = _new_figure(7.5 if classes else 5.5, 5.0, layout="constrained")
    ax = fig.subplots()
    groups = [("", "unlabelled", (0.6, 0.6, 0.6, 1.0))] + [(c, c, colours[c]) for c in classes]
    for label, name, colour in groups:
        mask = np.array([x == label for x in labels], dtype=bool)
        if mask.any():
            ax.scatter(p[mask, 0], p[mask, 1], s=14, color=colour, label=name, alpha=0.8, linewidths=0)
    ax.set_xlabel("component 1", fontsize=8)
    ax.set_ylabel("component 2", fontsize=8)
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    if classes:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncols=1 + len(classes) // 25)
    return fig


def plot_neighbours(
    query_spec: ArrayLike,
    neighbour_specs: Sequence[ArrayLike],
    titles: Sequence[str],
    query_title: str = "query",
) -> Figure:
    """A query clip's log-mel and its retrieved neighbours' side by side, on one colour scale.

    ``titles`` name the neighbours (e.g. class and cosine), one each; the query is framed in red so it
    stands out from the row. Clips may differ in length: each image fills its cell.
    """
    if len(titles) != len(neighbour_specs):
        raise ValueError(f"{len(titles)} titles for {len(neighbour_specs)} neighbours")
    specs = [query_spec, *neighbour_specs]
    vmin, vmax = color_range(*specs)
    fig = _new_figure(1.2 + 2.2 * len(specs), 2.6, layout="constrained")
    axes = fig.subplots(1, len(specs), squeeze=False)[0]
    for j, (ax, spec, title) in enumerate(zip(axes, specs, [query_title, *titles], strict=True)):
        show_spectrogram(ax, spec, textwrap.fill(title, 28), vmin, vmax)
        ax.set_xlabel("frame", fontsize=7)
        if j == 0:
            ax.set_ylabel("mel band", fontsize=7)
            for side in ax.spines.values():
                side.set(edgecolor="tab:red", linewidth=2.5)
        else:
            ax.set_yticks([])
    return fig


# ---------------------------------------------------------------------------------------------------------
# a finished run's diagnostics (for notebooks/training_run.ipynb)

# (panel title, metric names; a name ending in "*" takes every column with that prefix)
TRAINING_PANELS: list[tuple[str, list[str]]] = [
    ("NT-Xent loss", ["train/loss"]),
    ("learning rate", ["lr-*"]),
    ("cosine of positive / negative pairs", ["diag/pos_cos", "diag/neg_cos"]),
    ("alignment / uniformity (lower is better)", ["diag/alignment", "diag/uniformity"]),
    ("per-dimension std × √d (1: spread, 0: collapse)", ["diag/z_std_ratio", "diag/h_std_ratio"]),
    ("effective rank", ["diag/z_effective_rank", "diag/h_effective_rank"]),
    ("kNN accuracy", ["knn/acc", "knn/bal_acc"]),
    ("throughput (patches/s per process)", ["train/device/samples_per_sec"]),
]


def read_metrics(csv_path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every metric of a CSVLogger ``metrics.csv`` as ``(steps, values)``, empty cells left out.

    Lightning writes one row per logging call with blanks for the metrics not logged then, so each
    column is its own sparse series over the ``step`` column. Plain ``csv``: no pandas needed.
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    with Path(csv_path).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if step in (None, ""):
                continue
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                steps, values = series.setdefault(key, ([], []))
                steps.append(float(step))
                values.append(float(value))
    return {k: (np.asarray(s), np.asarray(v)) for k, (s, v) in series.items()}


def plot_training_run(csv_path: str | Path) -> Figure:
    """The diagnostics of a pretraining run over optimiser steps, one panel each (:data:`TRAINING_PANELS`).

    Reads the run's CSVLogger ``metrics.csv``; a panel whose metrics were not logged (e.g. kNN accuracy
    on unlabelled data, or a run too short for the diagnostics' interval) says so instead of a curve.
    """
    metrics = read_metrics(csv_path)
    steps = [s for s, _ in metrics.values() if len(s)]
    span = (min(s.min() for s in steps), max(s.max() for s in steps)) if steps else None
    columns = 2
    rows = -(-len(TRAINING_PANELS) // columns)
    fig = _new_figure(11.0, 2.5 * rows, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (title, names) in zip(axes, TRAINING_PANELS, strict=False):
        keys = [
            k for n in names for k in sorted(metrics) if (k.startswith(n[:-1]) if n.endswith("*") else k == n)
        ]
        for key in keys:
            steps, values = metrics[key]
            few = len(steps) <= 20  # sparse series (kNN every few epochs) get markers
            ax.plot(steps, values, marker="o" if few else None, markersize=3, linewidth=1.2, label=key)
        if keys:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if span is not None and span[1] > span[0]:
            margin = 0.02 * (span[1] - span[0])
            ax.set_xlim(span[0] - margin, span[1] + margin)  # one step axis for all panels
    for ax in axes[len(TRAINING_PANELS) :]:
        ax.set_axis_off()
    for ax in axes[-columns:]:
        ax.set_xlabel("step", fontsize=8)
    fig.suptitle(str(csv_path), fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------------------
# model and data as the CLI builds them


def checkout_root(start: str | Path | None = None) -> Path:
    """The ser-ssl checkout at or above ``start`` (the working directory): the folder with
    ``configs/``, where the notebooks' paths (``configs/``, ``runs/``, ``data/``) are the command
    line's. Outside a checkout, an error that says so."""
    here = Path(start or Path.cwd()).resolve()
    found = next((p for p in [here, *here.parents] if (p / "configs" / "pretrain.yaml").is_file()), None)
    if found is None:
        raise MissingFileError(
            f"no ser-ssl checkout (a folder with configs/pretrain.yaml) at or above {here}: open the "
            "notebook from the repository, where the configs and runs are"
        )
    return found


def load_from_config(
    config: str | None = None, args: Sequence[str] = ()
) -> tuple[L.LightningModule, L.LightningDataModule]:
    """The model and data module that ``ser-ssl fit --config config *args`` would train, untrained.

    Parsed by the CLI's own parser (same defaults, links and ``class_path`` resolution), without running
    anything; ``seed_everything`` from the config is applied, as the CLI does.
    """
    import lightning as L

    from ser_ssl.cli import SERCLI

    # in a Jupyter kernel sys.argv holds the kernel's own arguments, which `args` rightly replaces
    cli = SERCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=[*(["--config", str(config)] if config is not None else []), *args],
        run=False,
        auto_configure_optimizers=False,
    )
    return cli.model, cli.datamodule

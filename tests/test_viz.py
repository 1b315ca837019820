"""ser_ssl.viz: the recorded views are exactly the trained views, and every figure renders headless."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from ser_ssl.augment import (
    Compression,
    GaussianBlur,
    GaussianNoise,
    MixBack,
    RandomResizedCrop,
    RandomShift,
    SpecAugment,
    mix_back,
)
from ser_ssl.data.views import TwoViewDataset
from ser_ssl.models import VGGLike
from ser_ssl.tasks import SimCLR
from ser_ssl.viz import (
    TRAINING_PANELS,
    color_range,
    figure_to_array,
    load_from_config,
    locate_patch,
    plot_clip,
    plot_confusion,
    plot_embedding_2d,
    plot_neighbours,
    plot_per_class,
    plot_training_run,
    plot_views,
    plot_views_mosaic,
    read_metrics,
    record_views,
    show_spectrogram,
)
from tests.conftest import make_cache

N_MELS, FRAMES, CLIPS = 16, 24, 6

# SimCLR built in Python (not from a config) holds modules as hyper-parameters; Lightning's advice about
# that is for checkpoints, which these tests do not write.
pytestmark = pytest.mark.filterwarnings("ignore:Attribute '.*' is an instance of `nn.Module`")


def batch(n: int = CLIPS) -> dict[str, torch.Tensor]:
    """A pretraining batch as the data module gives it: log10 patches (around -3, like log-mel)."""
    g = torch.Generator().manual_seed(0)
    views = torch.randn(n, 2, 1, N_MELS, FRAMES, generator=g) - 3
    backgrounds = torch.randn(n, 2, 1, N_MELS, FRAMES, generator=g) - 2
    return {"views": views, "backgrounds": backgrounds, "index": torch.arange(10, 10 + n)}


def simclr(**kwargs) -> SimCLR:
    model = SimCLR(encoder=VGGLike(channels=(4,), embed_dim=8), n_mels=N_MELS, **kwargs)
    g = torch.Generator().manual_seed(1)
    model.normalizer.set_stats(torch.randn(N_MELS, generator=g) - 3, torch.rand(N_MELS, generator=g) + 0.5)
    return model


def every_transform(p: float) -> list[nn.Module]:
    return [
        RandomResizedCrop(p=p),
        RandomShift(max_time=5, max_freq=3, p=p),
        Compression(p=p),
        SpecAugment(freq_width=4, time_width=4, p=p),
        GaussianBlur(p=p),
        GaussianNoise(p=p),
    ]


SETTINGS = {
    "paper": {},
    "no mixback": {"mixback": None},
    "shared lambda": {"mixback": MixBack(alpha=0.3, shared_lambda=True)},
    "every transform, p=0.5": {"augment": every_transform(0.5)},
    "no augmentation": {"augment": []},
    "not a BatchTransform": {"augment": [nn.Identity(), GaussianNoise(), nn.Tanh()]},
    "asymmetric": {"augment": [RandomResizedCrop()], "second_view_augment": every_transform(1.0)},
}


@pytest.mark.parametrize("kwargs", SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize("clips", [2, CLIPS])
def test_records_end_in_the_views_make_views_makes(kwargs, clips):
    model, b = simclr(**kwargs), batch()
    torch.manual_seed(5)
    expected = model.make_views(b)
    after_make_views = torch.rand(3)
    torch.manual_seed(5)
    records = record_views(model, b, clips=clips)
    assert torch.equal(torch.rand(3), after_make_views)  # the same draws, in the same number
    assert [(r.clip, r.view) for r in records] == [(i, k) for i in range(clips) for k in range(2)]
    assert torch.equal(torch.stack([r.final for r in records]), expected[: 2 * clips])
    for r in records:
        assert r.index == 10 + r.clip
        assert torch.equal(r.patch, b["views"][r.clip, r.view])
        assert torch.equal(r.background, b["backgrounds"][r.clip, r.view])
        assert torch.equal(r.standardised, model.normalizer(r.mixed))


@pytest.mark.parametrize("shared", [False, True])
def test_the_recorded_lambda_is_the_drawn_one(shared):
    model, b = simclr(mixback=MixBack(alpha=0.3, shared_lambda=shared)), batch()
    records = record_views(model, b, clips=CLIPS)
    lams = torch.tensor([r.lam for r in records]).view(CLIPS, 2)
    assert ((lams >= 0) & (lams < 0.3)).all()
    assert torch.equal(lams[:, 0], lams[:, 1]) == shared
    for r in records:
        assert torch.equal(r.mixed, mix_back(r.patch[None], r.background[None], torch.tensor([r.lam]))[0])
    assert "λ=" in plot_views(records[:2]).axes[2].get_title()


def test_without_mixback_the_mixed_patch_is_the_patch():
    records = record_views(simclr(mixback=None), batch(), clips=1)
    assert all(r.lam is None and not r.mixback and torch.equal(r.mixed, r.patch) for r in records)
    assert plot_views(records).axes[2].get_title() == "mix-back off"


class LoudMixBack(MixBack):
    """Draws λ its own way: the records show what it drew, because they come from the same draw."""

    def sample_params(self, views: torch.Tensor) -> torch.Tensor:
        torch.rand(1)
        return super().sample_params(views).clamp(min=0.01)


def test_a_mixback_that_draws_its_own_way_is_recorded_as_drawn():
    model, b = simclr(mixback=LoudMixBack()), batch()
    torch.manual_seed(2)
    expected = model.make_views(b)
    torch.manual_seed(2)
    records = record_views(model, b, clips=CLIPS)
    assert all(r.lam is not None and r.lam >= 0.01 - 1e-6 for r in records)  # float32 0.01
    assert torch.equal(torch.stack([r.final for r in records]), expected)
    for r in records:
        assert torch.equal(r.mixed, mix_back(r.patch[None], r.background[None], torch.tensor([r.lam]))[0])


def test_stage_titles_carry_the_drawn_parameters():
    model = simclr(augment=[RandomResizedCrop(), Compression(p=0.0), nn.Identity()])
    records = record_views(model, batch(), clips=1)
    titles = [s.title for s in records[0].stages]
    assert titles[0].startswith("rrc scale=") and "ratio=" in titles[0]
    assert titles[1:] == ["compress off", "Identity"]
    assert [s.name for s in records[0].stages] == ["RandomResizedCrop", "Compression", "Identity"]


def test_plot_views_has_a_row_per_view_and_a_column_per_step():
    model = simclr()  # paper: 3 transforms
    records = record_views(model, batch(), clips=2)
    fig = plot_views(records)
    assert isinstance(fig, Figure) and len(fig.axes) == 4 * (4 + 3)
    titles = [ax.get_title() for ax in fig.axes[:7]]
    assert titles[0] == "clip 0 (#10) view 1: patch" and titles[3] == "standardised"
    assert titles[4].startswith("rrc") and titles[5].startswith("compress") and titles[6].startswith("noise")
    # one colour scale for the log-mel images of a row and one for the standardised ones
    row = fig.axes[:7]
    assert len({ax.images[0].get_clim() for ax in row[:3]}) == 1
    assert len({ax.images[0].get_clim() for ax in row[3:]}) == 1


def test_plot_views_leaves_unused_cells_empty_for_asymmetric_views():
    model = simclr(augment=[GaussianNoise()], second_view_augment=[RandomShift(), GaussianNoise()])
    fig = plot_views(record_views(model, batch(), clips=1))
    assert len(fig.axes) == 2 * 6
    assert not fig.axes[5].axison and fig.axes[11].axison  # view 1 has one stage fewer
    with pytest.raises(ValueError, match="no views"):
        plot_views([])


def find_block(image: np.ndarray, block: np.ndarray) -> list[tuple[int, int]]:
    """Top-left corners where ``block`` appears pixel for pixel in ``image`` (both ``[H, W, 3]``)."""
    h, w = block.shape[:2]
    corners = zip(*np.nonzero((image == block[0, 0]).all(-1)), strict=True)
    return [(y, x) for y, x in corners if np.array_equal(image[y : y + h, x : x + w], block)]


@pytest.mark.parametrize("zoom", [1, 2])
def test_plot_views_mosaic_shows_every_image_pixel_for_pixel_with_low_bands_at_the_bottom(zoom):
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    records = record_views(simclr(), batch(), clips=2)
    fig = plot_views_mosaic(records, zoom=zoom)
    image = figure_to_array(fig)
    texts = [t.get_text().replace("\n", " ") for t in fig.texts]  # titles wrapped to the cell width
    assert len(texts) == 1 + 4 * 7 and texts[0].startswith("clip 0 (#10) view 1")  # titles, then the header
    corners = []
    for r in records:
        for spec, (vmin, vmax) in [
            (r.patch, color_range(r.patch, r.background, r.mixed)),
            (r.stages[-1].output, color_range(r.standardised, *(s.output for s in r.stages))),
        ]:
            expected = np.flipud(spec[0].numpy())  # band 0 in the bottom row
            rgb = colormaps["magma"](Normalize(vmin, vmax)(expected), bytes=True)[..., :3]
            (corner,) = find_block(image, rgb.repeat(zoom, 0).repeat(zoom, 1))
            corners.append(corner)
    ys, xs = zip(*corners, strict=True)
    assert len(set(ys)) == 4 and len(set(xs)) == 2  # four rows (clips x views), first and last columns
    assert list(ys) == sorted(ys)  # clip by clip, view by view
    with pytest.raises(ValueError, match="no views"):
        plot_views_mosaic([])


def test_show_spectrogram_puts_low_bands_at_the_bottom_on_a_shared_scale():
    fig = Figure()
    ax = fig.subplots()
    spec = torch.arange(12.0).view(1, 3, 4)
    lo, hi = color_range(spec, spec * 2)
    image = show_spectrogram(ax, spec, "title", lo, hi)
    assert image.origin == "lower" and image.get_clim() == (0.0, 22.0) and ax.get_title() == "title"
    assert image.get_array().shape == (3, 4)
    with pytest.raises(ValueError, match="n_mels, frames"):
        show_spectrogram(ax, torch.zeros(2, 3, 4))


def test_locate_patch_finds_where_the_dataset_cut_each_patch(tmp_path):
    cache = make_cache(tmp_path, [40, 6, 30])  # frame t of clip i holds 100 i + t: every patch is unique
    dataset = TwoViewDataset(cache, [0, 1, 2], patch_frames=10)
    clip0 = np.asarray(cache.frames(0), np.float32).T
    for _ in range(5):
        item = dataset[0]
        for view in item["views"]:
            start = locate_patch(clip0, view)
            assert start is not None and torch.equal(view[0], torch.from_numpy(clip0[:, start : start + 10]))
    short = np.asarray(cache.frames(1), np.float32).T  # 6 frames, tiled to 10
    assert locate_patch(short, dataset[1]["views"][0]) == 0
    assert locate_patch(clip0, dataset[2]["views"][0]) is None  # a patch of another clip


def test_plot_clip_boxes_each_found_patch():
    fig = plot_clip(torch.randn(16, 80), [5, None, 60], patch_frames=20, title="clip")
    assert len(fig.axes) == 2  # the spectrogram and its colour bar
    boxes = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert [b.get_x() for b in boxes] == [4.5, 59.5]
    assert fig.axes[0].get_xlim() == (-0.5, 79.5)
    assert plot_clip(torch.randn(16, 8), [0], patch_frames=20).axes[0].get_xlim() == (-0.5, 19.5)


def test_plot_confusion_annotates_a_3x3_matrix():
    matrix = torch.tensor([[5, 1, 0], [0, 4, 2], [1, 0, 6]])
    fig = plot_confusion(matrix, ["a", "b", "c"], title="val")
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # the matrix and its colour bar
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["5", "1", "0", "0", "4", "2", "1", "0", "6"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    normalized = plot_confusion(matrix.numpy(), ["a", "b", "c"], normalize=True).axes[0]
    assert np.allclose(normalized.images[0].get_array().sum(1), 1.0)
    with pytest.raises(ValueError, match="does not match 2 classes"):
        plot_confusion(matrix, ["a", "b"])


def test_plot_per_class_draws_one_bar_per_class_in_order():
    fig = plot_per_class(torch.tensor([0.5, 0.9, 0.7]), ["a", "b", "c"], "recall")
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and ax.get_title() == "recall"
    assert [round(b.get_width(), 3) for b in ax.patches] == [0.5, 0.9, 0.7]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="3 values for 2 classes"):
        plot_per_class([0.1, 0.2, 0.3], ["a", "b"], "recall")


def test_plot_embedding_2d_draws_one_colour_per_class_and_grey_for_unlabelled():
    points = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]])
    fig = plot_embedding_2d(points, ["dog", "cat", "dog", ""], title="pca")
    ax = fig.axes[0]
    assert [c.get_label() for c in ax.collections] == ["unlabelled", "cat", "dog"]  # sorted classes
    assert [len(c.get_offsets()) for c in ax.collections] == [1, 1, 2]
    assert np.allclose(ax.collections[0].get_facecolor()[0][:3], 0.6)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["unlabelled", "cat", "dog"]
    assert plot_embedding_2d(points.numpy()).axes[0].get_legend() is None  # no labels, no legend
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plot_embedding_2d(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="3 labels for 4 points"):
        plot_embedding_2d(points, ["a", "b", "c"])


def test_plot_neighbours_puts_the_query_first_on_one_colour_scale():
    g = torch.Generator().manual_seed(0)
    query, others = torch.randn(8, 30, generator=g), [torch.randn(8, n, generator=g) + 1 for n in (10, 50)]
    fig = plot_neighbours(query, others, ["dog cos=0.90", "cat cos=0.80"], query_title="query: dog")
    assert [ax.get_title() for ax in fig.axes] == ["query: dog", "dog cos=0.90", "cat cos=0.80"]
    assert len({ax.images[0].get_clim() for ax in fig.axes}) == 1
    assert fig.axes[0].spines["left"].get_edgecolor()[:3] != fig.axes[1].spines["left"].get_edgecolor()[:3]
    with pytest.raises(ValueError, match="1 titles for 2 neighbours"):
        plot_neighbours(query, others, ["dog"])


METRICS_CSV = """diag/pos_cos,epoch,knn/acc,lr-AdamW/pg1,lr-AdamW/pg2,step,train/loss
,0,,0.001,0.001,0,
0.5,0,,,,0,
,0,,,,4,3.5
,0,,0.0005,0.0005,4,
,0,0.25,,,5,
,1,,,,9,2.5
"""


def test_read_metrics_gives_each_column_its_own_series(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS_CSV)
    metrics = read_metrics(path)
    assert set(metrics) == {"diag/pos_cos", "knn/acc", "lr-AdamW/pg1", "lr-AdamW/pg2", "train/loss"}
    steps, values = metrics["train/loss"]
    assert steps.tolist() == [4, 9] and values.tolist() == [3.5, 2.5]
    assert metrics["lr-AdamW/pg1"][0].tolist() == [0, 4]


def test_plot_training_run_has_a_panel_per_diagnostic_and_says_what_is_missing(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS_CSV)
    fig = plot_training_run(path)
    axes = fig.axes[: len(TRAINING_PANELS)]
    assert [ax.get_title() for ax in axes] == [title for title, _ in TRAINING_PANELS]
    lines = {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in axes}
    assert lines["NT-Xent loss"] == ["train/loss"]
    assert lines["learning rate"] == ["lr-AdamW/pg1", "lr-AdamW/pg2"]  # every parameter group
    assert lines["kNN accuracy"] == ["knn/acc"]
    missing = [ax for ax in axes if not ax.get_lines()]
    assert missing and all(ax.texts[0].get_text() == "not logged in this run" for ax in missing)
    assert {ax.get_xlim() for ax in axes} == {axes[0].get_xlim()}  # one step axis for every panel
    assert figure_to_array(fig).shape[2] == 3


def test_figure_to_array_is_rgb_uint8_of_the_figure_size():
    fig = plot_per_class([0.5, 0.9], ["a", "b"], "recall")
    fig.set_dpi(50)
    image = figure_to_array(fig)
    width, height = fig.get_size_inches() * 50
    assert image.shape == (round(height), round(width), 3) and image.dtype == np.uint8
    assert image.min() < 128 < image.max()  # something was drawn on the white background
    assert isinstance(fig.canvas, FigureCanvasAgg)


def test_load_from_config_builds_what_the_cli_would():
    args = ["--data.init_args.features.n_mels", "32", "--model.init_args.mixback", "null"]
    model, dm = load_from_config("configs/pretrain.yaml", args)
    assert isinstance(model, SimCLR) and type(dm).__name__ == "SSLDataModule"
    assert model.normalizer.mean.shape[0] == 32  # linked from the data's features, as in the CLI
    assert model.mixback is None and len(model.augment) == 3


def test_class_names_in_a_script_the_font_lacks_draw_without_a_warning_per_glyph():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = figure_to_array(plot_per_class([0.5, 0.7], ["猫", "dog"], "recall"))
    assert image.shape[2] == 3 and image.dtype == np.uint8


def test_the_notebooks_find_the_checkout_or_say_they_are_outside_one(tmp_path):
    from pathlib import Path

    from ser_ssl.errors import MissingFileError
    from ser_ssl.viz import checkout_root

    root = Path("configs").resolve().parent
    assert checkout_root(root / "configs" / "data") == root
    with pytest.raises(MissingFileError, match="open the notebook from the repository"):
        checkout_root(tmp_path)

"""Dashboard images and tables: every logger gets them, and training runs exactly as without them."""

import csv
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from PIL import Image
from torch.utils.data import DataLoader

import ser_ssl.callbacks.images as images
from ser_ssl.callbacks import ClassificationImages, EmbeddingTable, KNNMonitor, ViewImages, log_figure
from ser_ssl.data.feature_cache import FEATURES_FILE, FeatureCache
from ser_ssl.data.views import CentrePatchDataset, TwoViewDataset, as_batch
from ser_ssl.models import VGGLike
from ser_ssl.tasks import SimCLR
from ser_ssl.viz import _new_figure, figure_to_array
from tests.conftest import make_cache, tiny_args

N_MELS, PATCH, CLIPS, BATCH = 16, 24, 16, 4
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
    pytest.mark.filterwarnings("ignore:You have overridden `on_after_batch_transfer`"),  # as SimCLR does
    pytest.mark.filterwarnings(
        "ignore:Attribute '.*' is an instance of `nn.Module`"
    ),  # SimCLR built in Python
]


def figure():
    fig = _new_figure(2.0, 1.5)
    fig.subplots().plot([0, 1], [1, 0])
    return fig


def bare_trainer(tmp_path: Path, loggers: list) -> L.Trainer:
    return L.Trainer(
        logger=loggers,
        default_root_dir=tmp_path,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


class FakeWandb(Logger):
    """W&B's image interface, ``log_image(key, images, step)``, recording what it got (the file is read at
    once: W&B copies it into the run during the call)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, np.ndarray, int]] = []

    @property
    def name(self) -> str:
        return "fake"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_image(self, key: str, images: list, step: int | None = None) -> None:
        (image,) = images
        self.calls.append((key, np.asarray(Image.open(image).convert("RGB")), step))


class FakeTensorBoard(TensorBoardLogger):
    """A TensorBoardLogger whose experiment records ``add_image``; built without ``__init__``, which needs
    the tensorboard package (not a dependency)."""

    @classmethod
    def make(cls) -> "FakeTensorBoard":
        logger = cls.__new__(cls)
        logger.added = []
        return logger

    @property
    def experiment(self):
        return SimpleNamespace(add_image=lambda *args, **kwargs: self.added.append((args, kwargs)))


class RecordingWandb(WandbLogger):
    """A WandbLogger that records what it is given and starts no W&B run: a run left open in this process
    would be taken over by the next WandbLogger (the CLI's, in the ``pretrained`` fixture)."""

    def __init__(self) -> None:
        super().__init__(offline=True)
        self.logged: list[tuple[dict, int | None]] = []

    @property
    def experiment(self) -> SimpleNamespace:
        return SimpleNamespace()

    def log_metrics(self, metrics, step=None) -> None:
        self.logged.append((metrics, step))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def test_log_figure_writes_a_png_for_the_csv_logger(tmp_path):
    logger = CSVLogger(tmp_path)
    fig = figure()
    (path,) = log_figure(bare_trainer(tmp_path, [logger]), "views/examples", fig, 7)
    assert path == Path(logger.log_dir) / "images" / "views_examples_7.png"
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), figure_to_array(fig))


@pytest.mark.parametrize("with_csv", [False, True])
def test_log_figure_hands_wandb_like_loggers_the_image(tmp_path, with_csv):
    fake = FakeWandb()
    loggers = [fake, CSVLogger(tmp_path)] if with_csv else [fake]
    fig = figure()
    written = log_figure(bare_trainer(tmp_path, loggers), "val/confusion", fig, 3)
    ((key, image, step),) = fake.calls
    assert (key, step) == ("val/confusion", 3)
    assert np.array_equal(image, figure_to_array(fig))
    assert len(written) == int(with_csv)  # W&B alone leaves no file behind
    assert list(tmp_path.rglob("*.png")) == written


def test_log_figure_adds_an_hwc_image_to_tensorboard(tmp_path):
    tb = FakeTensorBoard.make()
    fig = figure()
    assert log_figure(bare_trainer(tmp_path, [tb]), "views/examples", fig, 2) == []
    ((args, kwargs),) = tb.added
    assert args[0] == "views/examples" and args[2] == 2 and kwargs == {"dataformats": "HWC"}
    assert np.array_equal(args[1], figure_to_array(fig))


def test_log_figure_does_nothing_off_rank_zero_or_without_loggers(tmp_path):
    fake = FakeWandb()
    off_rank = SimpleNamespace(is_global_zero=False, loggers=[fake], default_root_dir=tmp_path)
    assert log_figure(off_rank, "k", figure(), 0) == [] and fake.calls == []
    assert log_figure(bare_trainer(tmp_path, []), "k", figure(), 0) == []


# ---------------------------------------------------------------------------------------------------------
# pretraining callbacks on a toy data module with the real datasets


def logmel_cache(directory: Path, lengths: list[int]) -> FeatureCache:
    """A cache laid out by :func:`make_cache`, its frames replaced by log10-mel-like noise."""
    make_cache(directory, lengths, N_MELS)
    values = np.random.default_rng(0).normal(-3, 0.7, (sum(lengths), N_MELS)).astype(np.float16)
    (directory / FEATURES_FILE).write_bytes(values.tobytes())
    return FeatureCache(directory)


class ToySSLData(L.LightningDataModule):
    """SSLDataModule's interface on a hand-made cache: two-view training batches and a labelled kNN bank.

    Read with ``num_workers=0``, so training draws its patches from the dataset's generator in this
    process, the one a careless callback would disturb.
    """

    def __init__(self, cache: FeatureCache) -> None:
        super().__init__()
        self.cache = cache
        self.norm_mean, self.norm_std = (torch.from_numpy(a) for a in cache.band_stats(range(CLIPS)))

    def train_dataloader(self) -> DataLoader:
        ds = TwoViewDataset(self.cache, range(CLIPS), PATCH)
        return DataLoader(ds, BATCH, shuffle=True, drop_last=True, num_workers=0, collate_fn=as_batch)

    def knn_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        def loader(rows: range) -> DataLoader:
            return DataLoader(
                CentrePatchDataset(self.cache, rows, [r % 3 for r in rows], PATCH), 5, collate_fn=as_batch
            )

        return loader(range(CLIPS)), loader(range(CLIPS, CLIPS + 6))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> FeatureCache:
    lengths = [PATCH + 3 * (i % 5) - 4 for i in range(CLIPS + 6)]  # some shorter than a patch
    return logmel_cache(tmp_path_factory.mktemp("cache"), lengths)


def pretrain(
    cache: FeatureCache, root: Path, callbacks: list, loggers: list | None = None, **kwargs
) -> tuple[SimCLR, L.Trainer]:
    L.seed_everything(0)
    model = SimCLR(encoder=VGGLike(channels=(4,), embed_dim=8), n_mels=N_MELS, proj_hidden_dim=16, proj_dim=8)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=[CSVLogger(root), *(loggers or [])],
        callbacks=callbacks,
        default_root_dir=root,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        **kwargs,
    )
    trainer.fit(model, ToySSLData(cache))
    return model, trainer


def test_view_images_leave_training_as_it_was(cache, tmp_path):
    """Three epochs of four steps: views are logged at the start of each, and the weights end the same."""
    plain, _ = pretrain(cache, tmp_path / "plain", [], max_steps=10)
    logged, trainer = pretrain(
        cache, tmp_path / "views", [ViewImages(every_n_epochs=1, clips=2)], max_steps=10
    )
    pngs = sorted((Path(trainer.logger.log_dir) / "images").glob("*.png"))
    assert [p.name for p in pngs] == ["views_examples_0.png", "views_examples_4.png", "views_examples_8.png"]
    width, height = Image.open(pngs[0]).size
    assert width > 7 * PATCH and height > 4 * N_MELS  # 4 rows (2 clips, 2 views) of 7 images
    for (name, a), b in zip(plain.state_dict().items(), logged.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_view_images_follow_every_n_epochs(cache, tmp_path):
    _, trainer = pretrain(cache, tmp_path, [ViewImages(every_n_epochs=2)], max_epochs=3)
    pngs = sorted(p.name for p in (Path(trainer.logger.log_dir) / "images").glob("*.png"))
    assert pngs == ["views_examples_0.png", "views_examples_8.png"]  # epochs 0 and 2, four steps each


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_embedding_table_writes_label_and_every_dimension(cache, tmp_path):
    table = EmbeddingTable(every_n_epochs=1, max_clips=5)
    _, trainer = pretrain(cache, tmp_path, [table], max_epochs=2)
    files = sorted(p.name for p in Path(trainer.logger.log_dir).glob("embeddings_epoch*.csv"))
    assert files == ["embeddings_epoch1.csv", "embeddings_epoch2.csv"]  # the end of training is epoch 2's
    rows = read_csv(Path(trainer.logger.log_dir) / "embeddings_epoch2.csv")
    assert rows[0] == ["label", *(f"e{j}" for j in range(8))]
    assert len(rows) == 1 + 5
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert np.allclose(np.linalg.norm(values, axis=1), 1, atol=1e-5)  # normalised, as kNN compares them
    # five of the 16 bank clips, evenly spread, with their labels (r % 3, no class names in this toy data)
    assert [r[0] for r in rows[1:]] == [str(i % 3) for i in table.selection(CLIPS).tolist()]


def test_embedding_table_embeds_its_clips_itself_whatever_other_callbacks_run(cache, tmp_path):
    _, alone = pretrain(cache, tmp_path / "alone", [EmbeddingTable(max_clips=5)], max_epochs=2)
    callbacks = [KNNMonitor(k=3, every_n_epochs=2), EmbeddingTable(max_clips=5)]
    _, shared = pretrain(cache, tmp_path / "shared", callbacks, max_epochs=2)
    expected = read_csv(Path(alone.logger.log_dir) / "embeddings_epoch2.csv")
    got = read_csv(Path(shared.logger.log_dir) / "embeddings_epoch2.csv")
    assert [r[0] for r in got] == [r[0] for r in expected]
    assert np.allclose(np.array(got[1:])[:, 1:].astype(float), np.array(expected[1:])[:, 1:].astype(float))


def test_embedding_table_gives_wandb_the_principal_components_of_wide_embeddings(
    cache, tmp_path, monkeypatch
):
    wandb = RecordingWandb()
    _, trainer = pretrain(cache, tmp_path, [EmbeddingTable(max_clips=6, max_dims=3)], [wandb], max_epochs=1)
    tables = [(m["embeddings"], step) for m, step in wandb.logged if "embeddings" in m]
    ((table, step),) = tables
    assert table.columns == ["label", "pc0", "pc1", "pc2"] and len(table.data) == 6
    assert step == trainer.global_step  # after the last step
    full = read_csv(Path(trainer.logger.log_dir) / "embeddings_epoch1.csv")  # the CSV keeps all 8
    x = torch.tensor([[float(v) for v in row[1:]] for row in full[1:]])
    expected = images.principal_components(x, 3)
    assert torch.allclose(torch.tensor([row[1:] for row in table.data]), expected, atol=1e-5)
    assert [row[0] for row in table.data] == [row[0] for row in full[1:]]


def test_principal_components_keep_distances_and_order_by_variance():
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0)) * torch.arange(1.0, 9.0)
    pcs = images.principal_components(x, 8)
    assert torch.allclose(torch.cdist(pcs, pcs), torch.cdist(x, x), atol=1e-4)  # a rotation of the centred x
    variances = pcs.var(0)
    assert torch.all(variances[:-1] >= variances[1:])
    assert images.principal_components(x, 3).shape == (20, 3)


def test_the_wandb_table_declares_its_column_types():
    table = images.wandb_table(["label", "e0", "e1"], ["a", "b"], torch.tensor([[0.6, 0.8], [1.0, 0.0]]))
    assert table.columns == ["label", "e0", "e1"]
    assert table.data == [["a", pytest.approx(0.6), pytest.approx(0.8)], ["b", 1.0, 0.0]]


# ---------------------------------------------------------------------------------------------------------
# probe images


def test_classification_images_plot_the_modules_results_once(tmp_path):
    trainer = bare_trainer(tmp_path, [CSVLogger(tmp_path)])
    confusion = torch.tensor([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    module = SimpleNamespace(
        per_class_results={"val": confusion}, class_names=["a", "b", "c"], multilabel=False
    )
    callback = ClassificationImages()
    callback.on_validation_end(trainer, module)
    callback.on_validation_end(trainer, module)  # nothing new computed: nothing logged again
    names = sorted(p.name for p in tmp_path.rglob("*.png"))
    assert names == ["val_confusion_0.png", "val_per_class_0.png"]
    assert module.per_class_results == {}


def test_classification_images_show_average_precision_for_multilabel_data(tmp_path):
    trainer = bare_trainer(tmp_path, [CSVLogger(tmp_path)])
    module = SimpleNamespace(
        per_class_results={"test": torch.tensor([0.5, 0.9])}, class_names=["a", "b"], multilabel=True
    )
    ClassificationImages().on_test_end(trainer, module)
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["test_per_class_0.png"]


@pytest.mark.slow
def test_classification_images_on_a_tiny_probe_run(pretrained, tiny_data, tmp_path):
    """configs/probe.yaml logs both images after each validation and the test, none for the sanity check."""
    from ser_ssl.cli import cli_main

    args = tiny_args("probe", tmp_path / "probe", tiny_data, pretrained / "cache")
    args += ["--model.encoder_checkpoint", str(pretrained / "pretrain" / "checkpoints" / "last.ckpt")]
    args += ["--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1"]
    cli_main(["fit", *args])
    cli_main(["test", *args])
    fit_dir, test_dir = sorted((tmp_path / "probe" / "lightning_logs").glob("version_*"))
    with (fit_dir / "metrics.csv").open(newline="") as f:
        val_steps = [int(r["step"]) for r in csv.DictReader(f) if r["val/bal_acc"]]
    assert len(val_steps) == 2  # the images sit at the steps of the validation metrics they show
    expected = sorted(f"val_{kind}_{step}.png" for kind in ("confusion", "per_class") for step in val_steps)
    assert sorted(p.name for p in (fit_dir / "images").glob("*.png")) == expected
    test_images = sorted(p.name for p in (test_dir / "images").glob("*.png"))
    assert test_images == ["test_confusion_0.png", "test_per_class_0.png"]
    assert (tmp_path / "probe" / "confusion_test.csv").is_file()  # the CSVs are still written

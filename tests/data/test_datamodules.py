"""Tests of the data modules' choice of source, label fractions and multi-label targets."""

from __future__ import annotations

import logging
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
import torch

from ser_ssl.data import CSVManifest, FolderSource, LabeledDataModule, SSLDataModule, SyntheticSource
from ser_ssl.errors import ConfigError, DataError
from tests.data.test_sources import wav, write_csv


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the module: every data module over ``tiny_data`` reuses the same build."""
    return tmp_path_factory.mktemp("cache")


def labelled(tiny_data: Path, cache_dir: Path, **kwargs) -> LabeledDataModule:
    dm = LabeledDataModule(
        manifest=str(tiny_data), cache_dir=str(cache_dir), batch_size=4, num_workers=0, **kwargs
    )
    dm.setup("fit")
    return dm


def train_paths(dm: LabeledDataModule) -> set[Path]:
    return {dm.clips[i].path for i in dm.train_idx}


def test_label_fraction_is_stratified_seeded_and_nested(tiny_data, cache_dir):
    full = labelled(tiny_data, cache_dir)
    assert full.train_idx == full.split_indices("train") and full.num_classes == 12
    half = labelled(tiny_data, cache_dir, label_fraction=0.5)
    assert half.classes == full.classes
    per_class = Counter(half.clips[i].label for i in half.train_idx)
    assert per_class == {c: 2 for c in full.classes}  # 4 training clips per class
    tenth = labelled(tiny_data, cache_dir, label_fraction=0.1)
    assert Counter(tenth.clips[i].label for i in tenth.train_idx) == {c: 1 for c in full.classes}
    assert train_paths(tenth) <= train_paths(half)  # nested for one seed
    assert train_paths(labelled(tiny_data, cache_dir, label_fraction=0.5)) == train_paths(half)
    other = labelled(tiny_data, cache_dir, label_fraction=0.5, label_seed=1)
    assert train_paths(other) != train_paths(half)
    # evaluation and the normalisation statistics are not affected
    assert half.split_indices("val") == full.split_indices("val")
    assert torch.equal(half.norm_mean, full.norm_mean)
    batch = next(iter(half.train_dataloader()))
    assert batch["patch"].shape[0] == 4 and batch["target"].shape == (4,)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_label_fraction_out_of_range(fraction):
    with pytest.raises(ConfigError, match="label_fraction"):
        LabeledDataModule(label_fraction=fraction)


def test_manifest_and_source_are_exclusive(tmp_path):
    with pytest.raises(ConfigError, match="give one of them"):
        SSLDataModule(manifest="m.csv", source=CSVManifest("m.csv"))
    assert SSLDataModule(manifest="m.csv").data_source.root == Path("m.csv")
    assert isinstance(SSLDataModule().data_source, SyntheticSource)
    assert SSLDataModule().data_source.root == Path("data/synthetic")
    source = FolderSource(str(tmp_path))
    assert SSLDataModule(source=source).data_source is source


@pytest.fixture
def multilabel(tmp_path) -> Path:
    rows = []
    for i in range(6):
        wav(tmp_path / f"{i}.wav", seed=i)
        rows.append([f"{i}.wav", "dog;bark" if i % 2 else "music", "test" if i == 5 else "train"])
    return write_csv(tmp_path / "m.csv", rows, ["filename", "label", "split"])


def ml_kwargs(manifest: Path, tmp_path: Path, **kwargs) -> dict:
    return dict(
        source=CSVManifest(str(manifest)),
        cache_dir=str(tmp_path / "cache"),
        batch_size=2,
        num_workers=0,
        patch_frames=8,
        **kwargs,
    )


def test_multilabel_data_pretrains_and_trains_downstream_with_multi_hot_targets(multilabel, tmp_path, caplog):
    ssl = SSLDataModule(**ml_kwargs(multilabel, tmp_path))
    ssl.prepare_data()
    ssl.setup("fit")
    batch = next(iter(ssl.train_dataloader()))
    assert batch["views"].shape[:2] == (2, 2)
    # the online probe's targets: the single-labelled training clips only, -1 for the others
    assert ssl.classes == ["music"] and ssl.train_targets(ssl.split_indices("train")) == [0, -1, 0, -1, 0]
    assert batch["target"].dtype == torch.long

    dm = LabeledDataModule(**ml_kwargs(multilabel, tmp_path))
    with caplog.at_level(logging.INFO, logger="ser_ssl"):
        dm.setup("fit")
    assert dm.multilabel and dm.classes == ["bark", "dog", "music"] and dm.num_classes == 3
    (said,) = [r.getMessage() for r in caplog.records if "several labels" in r.getMessage()]
    assert "so the classifier is multi-label" in said and "multilabel false" in said
    batch = next(iter(dm.train_dataloader()))
    assert batch["target"].shape == (2, 3) and batch["target"].dtype == torch.float32
    assert set(batch["target"].sum(1).tolist()) <= {1.0, 2.0}
    test = next(iter(dm.test_dataloader()))
    assert torch.equal(test["target"], torch.tensor([[1.0, 1.0, 0.0]]))  # clip 5: dog;bark
    with pytest.raises(DataError, match="multilabel is false"):
        LabeledDataModule(**ml_kwargs(multilabel, tmp_path), multilabel=False).setup("fit")


def test_multilabel_can_be_forced_on_single_label_data(tiny_data, cache_dir):
    dm = labelled(tiny_data, cache_dir, multilabel=True)
    assert dm.multilabel and dm.num_classes == 12
    target = next(iter(dm.test_dataloader()))["target"]
    assert target.shape == (dm.eval_batch_size, 12) and torch.equal(target.sum(1), torch.ones(len(target)))
    assert labelled(tiny_data, cache_dir).multilabel is False


def test_multilabel_unseen_eval_labels_are_dropped_with_one_warning(tmp_path):
    rows = []
    clips = [
        ("a;b", "train"),
        ("b", "train"),
        ("a", "train"),
        ("a;b", "train"),
        ("a;owl", "test"),
        ("owl", "test"),
    ]
    for i, (labels, split) in enumerate(clips):
        wav(tmp_path / f"{i}.wav", seed=i)
        rows.append([f"{i}.wav", labels, split])
    manifest = write_csv(tmp_path / "m.csv", rows, ["filename", "label", "split"])
    dm = LabeledDataModule(**ml_kwargs(manifest, tmp_path))
    with pytest.warns(UserWarning, match=r"2 clips of split 'test' have labels \['owl'\]") as record:
        dm.setup("fit")
    assert len([w for w in record if "owl" in str(w.message)]) == 1
    batch = next(iter(dm.test_dataloader()))
    assert torch.equal(batch["target"], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # clips kept, 'owl' gone


def test_multilabel_label_fraction_covers_every_class_and_is_seeded_and_nested(tmp_path):
    labels = ["a;b", "a", "b", "a;c", "b", "a", "a;b", "b", "a", "owl;b", "a", "b"]  # owl once, c once
    rows = []
    for i, lab in enumerate(labels):
        wav(tmp_path / f"{i}.wav", seed=i)
        rows.append([f"{i}.wav", lab, "train"])
    manifest = write_csv(tmp_path / "m.csv", rows, ["filename", "label", "split"])

    def subset(fraction: float, seed: int = 0) -> set[Path]:
        dm = LabeledDataModule(**ml_kwargs(manifest, tmp_path), label_fraction=fraction, label_seed=seed)
        dm.setup("fit")
        return {dm.clips[i].path for i in dm.train_idx}

    labels_of = {tmp_path / f"{i}.wav": set(lab.split(";")) for i, lab in enumerate(labels)}
    small, half = subset(0.1), subset(0.5)
    for chosen in (small, half):
        assert set().union(*(labels_of[p] for p in chosen)) == {"a", "b", "c", "owl"}
    assert len(small) <= 4 and len(half) == 6  # the share, unless covering every class takes more
    assert small <= half and half <= subset(0.9) and len(subset(1.0)) == 12
    assert subset(0.5) == half and any(subset(0.5, seed) != half for seed in (1, 2, 3))


def test_folder_source_end_to_end(tmp_path):
    root = tmp_path / "sounds"
    for k, cls in enumerate(["bird", "car"]):
        for i in range(6):
            wav(root / cls / f"{i}.wav", seed=10 * k + i)
    dm = LabeledDataModule(
        source=FolderSource(str(root), val_fraction=0.2, test_fraction=0.2, seed=0),
        cache_dir=str(tmp_path / "cache"),
        batch_size=4,
        num_workers=0,
        patch_frames=8,
        eval_batch_size=2,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.classes == ["bird", "car"]
    assert Counter(c.split for c in dm.clips) == {"train": 8, "val": 2, "test": 2}
    batch = next(iter(dm.train_dataloader()))
    x, y = batch["patch"], batch["target"]
    assert x.shape == (4, 1, 96, 8) and x.dtype == torch.float32
    assert set(y.tolist()) <= {0, 1}
    assert len(dm.val_dataloader()) == 1 and len(dm.test_dataloader()) == 1


def test_knn_loaders_give_centre_patches_of_the_labelled_train_and_val_clips(tiny_data, cache_dir):
    dm = SSLDataModule(manifest=str(tiny_data), cache_dir=str(cache_dir), batch_size=4, num_workers=0)
    dm.setup("fit")
    bank, query = dm.knn_dataloaders()
    assert len(bank.dataset) == len(dm.split_indices("train")) == 48
    assert len(query.dataset) == len(dm.split_indices("val")) == 24
    first = next(iter(query))
    x, y = first["patch"], first["target"]
    assert x.shape == (4, 1, 96, dm.patch_frames) and y.dtype == torch.long
    assert torch.equal(next(iter(query))["patch"], x)  # the same patches every time
    assert set(torch.cat([b["target"] for b in bank]).tolist()) == set(range(12))
    dm.knn_splits = None
    assert dm.knn_dataloaders() is None


def first_batches(dm, n: int = 2) -> list[dict]:
    """The first ``n`` training batches as the model receives them (after the transfer hook)."""
    torch.manual_seed(3)
    loader = dm.train_dataloader()
    return [dm.transfer_batch_to_device(b, torch.device("cpu"), 0) for b in islice(loader, n)]


@pytest.mark.parametrize("module", [SSLDataModule, LabeledDataModule])
def test_device_cache_gives_the_patches_of_the_memmap_path(tiny_data, cache_dir, module):
    make = dict(manifest=str(tiny_data), cache_dir=str(cache_dir), batch_size=8, num_workers=0)
    host = module(**make)
    device = module(**make, device_cache="always")
    for dm in (host, device):
        dm.setup("fit")
    assert device.gathers_on_device(device.rows) and not host.gathers_on_device(host.rows)
    raw = next(iter(device.train_dataloader()))
    assert set(raw["draws"]) == {"rows", "starts"} and not any(v.ndim > 3 for v in raw["draws"].values())
    for a, b in zip(first_batches(host), first_batches(device), strict=True):
        assert a.keys() == b.keys() and "draws" not in b
        for key in a:
            assert torch.equal(a[key], b[key]), key
    # only the training clips were uploaded
    source = device._device_source
    assert len(source.features) == int(device.cache.lengths[device.train_set.rows].sum())


@pytest.mark.parametrize("module", [SSLDataModule, LabeledDataModule])
def test_training_off_the_cpu_moves_float16_frames_and_converts_them_after_the_transfer(
    tiny_data, cache_dir, module, monkeypatch
):
    make = dict(manifest=str(tiny_data), cache_dir=str(cache_dir), batch_size=8, num_workers=0)
    cpu, gpu = module(**make), module(**make)
    for dm in (cpu, gpu):
        dm.setup("fit")
    assert cpu.deliver(cpu.rows) == "patches"
    monkeypatch.setattr(type(gpu), "device", property(lambda self: torch.device("meta")))  # any non-CPU
    assert gpu.deliver(gpu.rows) == "frames"
    raw = next(iter(gpu.train_dataloader()))
    patches = raw["views" if module is SSLDataModule else "patch"]
    assert patches.dtype == torch.float16 and patches.shape[-1] == gpu.cache.n_mels  # frames, untransposed
    for a, b in zip(first_batches(cpu), first_batches(gpu), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_device_cache_auto_falls_back_to_the_memmap_when_features_do_not_fit(tiny_data, cache_dir, caplog):
    dm = SSLDataModule(
        manifest=str(tiny_data),
        cache_dir=str(cache_dir),
        batch_size=8,
        num_workers=0,
        device_cache="auto",
        device_cache_share=1e-9,
    )
    dm.setup("fit")
    with caplog.at_level("WARNING"):
        batch = next(iter(dm.train_dataloader()))
    assert "views" in batch and "draws" not in batch
    assert any("exceed" in r.message for r in caplog.records)
    dm.device_cache_share = 0.5  # a few MB of features fit half of any machine's RAM
    assert "draws" in next(iter(dm.train_dataloader()))
    with pytest.raises(ConfigError, match="device_cache_share"):
        SSLDataModule(device_cache_share=0.0)


def test_ddp_shares_are_fixed_disjoint_and_equal(tiny_data, cache_dir):
    from types import SimpleNamespace

    dm = SSLDataModule(manifest=str(tiny_data), cache_dir=str(cache_dir), num_workers=0)
    idx = list(range(100, 150))
    shares = []
    for rank in range(3):
        dm.trainer = SimpleNamespace(world_size=3, global_rank=rank)
        shares.append(dm.rank_share(idx))
        assert dm.rank_share(idx) == shares[-1]  # fixed
    assert [len(s) for s in shares] == [16, 16, 16]  # 50 // 3 each, two clips left out
    assert len(set().union(*shares)) == 48 and set().union(*shares) <= set(idx)
    dm.trainer = None
    assert dm.rank_share(idx) == idx


def test_normalisation_statistics_come_from_a_fixed_sample_of_norm_clips_training_clips(tiny_data, cache_dir):
    every = SSLDataModule(manifest=str(tiny_data), cache_dir=str(cache_dir), num_workers=0, norm_clips=None)
    every.setup("fit")
    train = every.split_indices("train")
    assert len(train) == 48 and every.usable(every.norm_sample(every.listed)) == train
    mean, std = every.cache.band_stats([every.rows[i] for i in train])
    torch.testing.assert_close(every.norm_mean, torch.from_numpy(mean))

    sampled = SSLDataModule(manifest=str(tiny_data), cache_dir=str(cache_dir), num_workers=0, norm_clips=10)
    sampled.setup("fit")
    sample = sampled.usable(sampled.norm_sample(sampled.listed))
    assert len(set(sample)) == 10 and set(sample) <= set(train)
    assert sampled.usable(sampled.norm_sample(sampled.listed)) == sample  # the same draw every time
    mean, std = sampled.cache.band_stats([sampled.rows[i] for i in sample])
    torch.testing.assert_close(sampled.norm_mean, torch.from_numpy(mean))
    torch.testing.assert_close(sampled.norm_std, torch.from_numpy(std))
    assert not torch.allclose(sampled.norm_mean, every.norm_mean)  # 10 of 48 clips, not all of them
    listed_train = [i for i, c in enumerate(every.listed) if c.split == "train"]
    assert SSLDataModule(norm_clips=48).norm_sample(every.listed) == listed_train


def test_norm_clips_below_one_is_refused():
    with pytest.raises(ConfigError, match="norm_clips"):
        SSLDataModule(norm_clips=0)


def test_a_per_node_cache_holds_the_nodes_shares_and_shares_are_cut_to_the_fewest_clips(tiny_data, tmp_path):
    from types import SimpleNamespace

    counts = []

    def fewest_over_ranks(count: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "min"
        counts.append(int(count))
        return torch.tensor(20)  # as if another node had lost 4 of its 24 clips as unusable

    dm = SSLDataModule(manifest=str(tiny_data), cache_dir=str(tmp_path), num_workers=0, norm_clips=8)
    strategy = SimpleNamespace(root_device=torch.device("cpu"), reduce=fewest_over_ranks)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1, num_nodes=2, node_rank=1, strategy=strategy)
    dm.setup("fit")
    train = [i for i, c in enumerate(dm.listed) if c.split == "train"]
    mine = dm.usable([train[j] for j in dm.deal(len(train), 1)])
    assert counts == [24] and dm.share == mine[:20]
    cached_train = {dm.listed_at[i] for i in dm.split_indices("train")}
    assert cached_train == {train[j] for j in dm.deal(48, 1)} | set(dm.norm_sample(dm.listed))
    assert len(dm.clips) < len(dm.listed)
    bank, _ = dm.knn_dataloaders()
    assert len(bank.dataset) == 8  # the normalisation sample: every node holds it

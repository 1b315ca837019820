"""LightningDataModules: pretraining (two views per clip) and labelled downstream tasks.

``prepare_data`` (once per node) generates the built-in data set when no source is configured and
builds the feature cache; ``setup`` (every process) opens the cache and computes the per-band
normalisation statistics over the training split.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler

from ser_ssl.audio import LogMelConfig
from ser_ssl.data.cache import build_cache
from ser_ssl.data.feature_cache import FeatureCache
from ser_ssl.data.manifest import Clip, encode_labels, split_name
from ser_ssl.data.sources import CSVManifest, DataSource
from ser_ssl.data.synthetic import SyntheticSource
from ser_ssl.data.views import (
    CacheDataset,
    CentrePatchDataset,
    ClipWindowsDataset,
    Deliver,
    LabeledPatchDataset,
    PatchSource,
    TwoViewDataset,
    as_batch,
    batch_of_patches,
)
from ser_ssl.errors import ConfigError, DataError
from ser_ssl.files import resolved

log = logging.getLogger(__name__)


def single_labels(clips: Iterable[Clip]) -> list[str]:
    """Sorted labels of the clips that carry exactly one label."""
    return sorted({c.labels[0] for c in clips if len(c.labels) == 1})


def device_memory(device: torch.device) -> int:
    """Bytes of memory of ``device``: the GPU's, or the machine's RAM for the CPU (0 if unknown)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return 0


class AudioDataModule(L.LightningDataModule):
    """Manifest, cache and normalisation statistics shared by every task.

    Args:
        manifest: CSV with ``filename,label[,split,group,fold]`` (paths relative to the CSV), the
            shorthand for ``source: {class_path: ser_ssl.data.CSVManifest, init_args: {path: ...}}``.
        source: the data set (a :class:`~ser_ssl.data.sources.DataSource`: FolderSource, FSD50K,
            FSDnoisy18k, ESC50, UrbanSound8K, CSVManifest, SyntheticSource); presets in
            ``configs/data/``. With neither ``manifest`` nor ``source``: the built-in data set
            (``SyntheticSource()``, generated under ``data/synthetic`` when missing).
        cache_dir: root of the feature caches.
        features: log-mel settings (docs/method.md §1).
        patch_frames: patch length in frames (101 frames is about 1 s).
        batch_size: clips per training batch.
        num_workers: DataLoader workers, also used to build the cache in parallel.
        strict: fail on the first unusable audio file instead of skipping it.
        train_split: the manifest split used for training and for the normalisation statistics.
        pin_memory: page-locked batches for faster host-to-GPU copies (useless on CPU).
        persistent_workers: keep DataLoader workers between epochs instead of starting them afresh at
            each epoch's start, where on 2 CPU cores they compete with training (a profiled 3-epoch
            pretraining: 3.41 s a step with fresh workers, 2.80 s with kept ones); a resumed run then
            draws other patches than an uninterrupted one would (``false`` for exact resumes).
        predict_split: the split ``ser-ssl predict`` embeds (:meth:`predict_dataloader`); ``None``:
            every usable clip.
        device_cache: where training patches are cut. ``never``: in the loader, from the memmap.
            ``always``: the training clips' features are uploaded to the training device once and
            the loader moves only the random draws (rows and start frames); the patches are
            gathered there in :meth:`transfer_batch_to_device`. ``auto``: ``always`` when the
            features fit ``device_cache_share`` of the device's memory, else ``never``.
        device_cache_share: the share of the device's memory (RAM for the CPU) the features may take.
        cache_per_node: under DDP on several nodes, each node builds the cache (into a ``cache_dir``
            on its own disk) while its other processes wait; for pretraining it holds only the
            training clips of that node's processes (:meth:`SSLDataModule.needed_clips`). ``false``
            when ``cache_dir`` is on a file system every node sees: only the first node builds the
            whole cache, the others wait, then read it.
        norm_clips: how many training clips the per-band normalisation statistics are computed
            from: a seeded sample, the same in every process, so no process reads a large set
            through for them (``null``: every training clip).
    """

    def __init__(
        self,
        manifest: str | None = None,
        source: DataSource | None = None,
        cache_dir: str = "cache",
        features: LogMelConfig = LogMelConfig(),
        patch_frames: int = 101,
        batch_size: int = 128,
        num_workers: int = 2,
        strict: bool = False,
        train_split: str = "train",
        predict_split: str | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        device_cache: Literal["never", "auto", "always"] = "never",
        device_cache_share: float = 0.5,
        cache_per_node: bool = True,
        norm_clips: int | None = 5000,
    ) -> None:
        super().__init__()
        if manifest is not None and source is not None:
            raise ConfigError(
                f"both data.manifest ({manifest}) and data.source ({source.describe()}) are set; "
                "give one of them (a manifest is the same as source: ser_ssl.data.CSVManifest)"
            )
        self.save_hyperparameters()
        self.manifest = manifest
        self.source = source
        self.cache_dir = cache_dir
        self.features = features
        self.patch_frames = patch_frames
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.strict = strict
        self.train_split = split_name(train_split)
        self.predict_split = None if predict_split is None else split_name(predict_split)
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        if not 0.0 < device_cache_share <= 1.0:
            raise ConfigError(f"device_cache_share must be in (0, 1], got {device_cache_share}")
        if norm_clips is not None and norm_clips < 1:
            raise ConfigError(f"norm_clips must be null or at least 1, got {norm_clips}")
        self.device_cache = device_cache
        self.device_cache_share = device_cache_share
        self.norm_clips = norm_clips
        self.prepare_data_per_node = cache_per_node  # Lightning's switch: prepare_data on global rank 0 only
        self.train_set: CacheDataset | None = None  # the last training dataset handed out
        self._device_source: PatchSource | None = None
        self.cache: FeatureCache | None = None
        self.clips: list[Clip] = []
        self.rows: list[int] = []  # cache row of each usable clip, parallel to self.clips
        self.listed: list[Clip] = []  # every clip the source lists, usable or not
        self.listed_at: list[int] = []  # index in self.listed of each usable clip, parallel to self.clips
        self.norm_mean: torch.Tensor | None = None
        self.norm_std: torch.Tensor | None = None
        self._prepared: tuple[list[Clip], Path] | None = None  # prepare_data's clips and cache

    @property
    def data_source(self) -> DataSource:
        """The configured source, the manifest's, or the built-in set's."""
        if self.source is not None:
            return self.source
        if self.manifest is not None:
            return CSVManifest(self.manifest)
        return SyntheticSource()

    def prepare_data(self) -> None:
        self.data_source.prepare()
        # kept for this process's setup, so the source's and the cache's warnings come once per run
        self._prepared = self._cached_manifest()

    def _cached_manifest(self) -> tuple[list[Clip], Path]:
        """The source's clips and the cache directory of those this node needs (built first if it
        does not exist yet)."""
        clips = self.data_source.clips()
        paths = [c.path for c in self.needed_clips(clips)]
        return clips, build_cache(paths, self.features, self.cache_dir, self.num_workers, self.strict)

    def needed_clips(self, clips: list[Clip]) -> list[Clip]:
        """The clips this node's cache holds: all of them."""
        return clips

    def setup(self, stage: str | None = None) -> None:
        if self.cache is not None:
            return
        clips, cache_dir = self._prepared or self._cached_manifest()
        self._prepared = None
        self.cache = FeatureCache(cache_dir)
        row_of = self.cache.row_of()
        self.listed = clips
        self.clips, self.rows, self.listed_at = [], [], []
        for i, clip in enumerate(clips):
            row = row_of.get(resolved(clip.path))
            if row is not None:  # unusable files were skipped, with a warning, by the cache build
                self.clips.append(clip)
                self.rows.append(row)
                self.listed_at.append(i)
        unread = Counter(c.split for c in self.clips if c.split not in self.known_splits())
        if unread:
            log.warning(
                "%s: %d clips are in splits %s that this task does not read (it reads %s); fix their "
                "split names, or name them with --data.init_args.train_split/val_split/test_split",
                self.data_source.describe(),
                sum(unread.values()),
                sorted(unread),
                sorted(self.known_splits()),
            )
        train = self.split_indices(self.train_split)
        if not train:
            raise DataError(f"{self.data_source.describe()}: no usable clip in split '{self.train_split}'")
        mean, std = self.cache.band_stats(sorted(self.rows[i] for i in self.usable(self.norm_sample(clips))))
        self.norm_mean, self.norm_std = torch.from_numpy(mean), torch.from_numpy(std)

    def norm_sample(self, clips: list[Clip]) -> list[int]:
        """Indices in ``clips`` (the source's list) of the training clips the normalisation
        statistics come from: every one, or a seeded sample of :attr:`norm_clips`; the same in every
        process, so each node's cache holds them (:meth:`needed_clips`)."""
        train = self.training(clips)
        if self.norm_clips is None or len(train) <= self.norm_clips:
            return train
        picked = np.random.default_rng(0).choice(len(train), self.norm_clips, replace=False)
        return sorted(train[j] for j in picked)

    def training(self, clips: list[Clip]) -> list[int]:
        """Indices in ``clips`` of the training split's clips."""
        return [i for i, c in enumerate(clips) if c.split == self.train_split]

    def usable(self, listed: list[int]) -> list[int]:
        """Positions in :attr:`clips` of the usable ones among the source's clips ``listed``."""
        position = {i: pos for pos, i in enumerate(self.listed_at)}
        return [position[i] for i in listed if i in position]

    def known_splits(self) -> set[str]:
        """Split names a clip may have without a warning: the usual three and the ones configured."""
        return {"train", "val", "test", self.train_split}

    def split_indices(self, split: str) -> list[int]:
        """Positions in ``self.clips`` of the usable clips of one split."""
        return [i for i, c in enumerate(self.clips) if c.split == split]

    @property
    def rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    def rank_share(self, idx: list[int]) -> list[int]:
        """This process's share of the training clips ``idx``: all of them in one process; under DDP
        a fixed, disjoint share dealt from one seeded permutation (the same in every process), equal
        in size so every process runs the same number of steps (the remainder of ``len(idx)`` over
        the process count is left out). A process reads, and with ``device_cache`` uploads, only
        its share; backgrounds come from it too. Its order is reshuffled every epoch."""
        if self.world_size == 1:
            return idx
        return [idx[j] for j in self.deal(len(idx), self.rank)]

    def deal(self, n: int, rank: int) -> list[int]:
        """Which of ``n`` training clips process ``rank`` gets (:meth:`rank_share`)."""
        world = self.world_size
        order = np.random.default_rng(0).permutation(n)[: n // world * world]
        return sorted(order[rank::world].tolist())

    def predict_dataloader(self) -> DataLoader:
        """Every usable clip of ``predict_split`` as windows with hop = patch length (the last one ends
        at the clip's end), in batches of ``batch_size`` clips with ``index`` (the
        clip's position in ``self.clips``), ``length`` and ``start`` (see ``ClipWindowsDataset``). Works
        on unlabelled data: ``target`` is the label's index among the sorted single labels, -1 for
        unlabelled or multi-label clips."""
        split = self.predict_split
        idx = list(range(len(self.clips))) if split is None else self.split_indices(split)
        if not idx:
            raise DataError(f"{self.data_source.describe()}: no usable clip in split '{split}' to embed")
        targets = self.single_label_targets(idx, single_labels(self.clips[i] for i in idx))
        rows = [self.rows[i] for i in idx]
        ds = ClipWindowsDataset(self.cache, rows, targets, self.patch_frames, ids=idx)
        return self._loader(ds, shuffle=False, batch_size=self.batch_size)

    def single_label_targets(self, idx: list[int], classes: list[str]) -> list[int]:
        """Each clip's index in ``classes``; -1 for clips without exactly one label or outside them."""
        return encode_labels([self.clips[i].labels for i in idx], classes, multilabel=False).tolist()

    def _loader(self, dataset, shuffle: bool, batch_size: int, sampler=None) -> DataLoader:
        """The dataset draws and gathers each batch at once (``__getitems__``), so no collation."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle if sampler is None else None,
            sampler=sampler,
            drop_last=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=as_batch,
        )

    @property
    def device(self) -> torch.device:
        """The training device (the CPU before a Trainer is attached)."""
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def deliver(self, rows: list[int]) -> Deliver:
        """What the training loader of cache ``rows`` delivers: only the draws when the patches are cut
        on the device (:meth:`gathers_on_device`); else patches ready for a CPU, or for another device
        the gathered float16 frames (half the bytes to copy; the transposing conversion, most of a host
        gather's time, then runs on the device in :meth:`transfer_batch_to_device`)."""
        if self.gathers_on_device(rows):
            return "draws"
        return "patches" if self.device.type == "cpu" else "frames"

    def gathers_on_device(self, rows: list[int]) -> bool:
        """Whether the training patches of cache ``rows`` are cut on the device (``device_cache``)."""
        if self.device_cache == "never":
            return False
        need = int(self.cache.lengths[rows].sum()) * self.cache.n_mels * 2
        budget = self.device_cache_share * device_memory(self.device)
        fits = need <= budget
        if self.device_cache == "always" or fits:
            log.info("device cache: %.2f GB of features on %s", need / 1e9, self.device)
            return True
        log.warning(
            "device cache: the training features (%.2f GB) exceed %.0f%% of %s's memory; patches are "
            "cut from the memmap in the loader instead",
            need / 1e9,
            100 * self.device_cache_share,
            self.device,
        )
        return False

    def _train_loader(self, dataset: CacheDataset) -> DataLoader:
        """Shuffled batches of the dataset. Under DDP the dataset already holds this process's share
        (:meth:`rank_share`): a one-replica ``DistributedSampler`` reshuffles it every epoch, and
        Lightning, seeing a distributed sampler, does not split it again."""
        self.train_set, self._device_source = dataset, None
        sampler = None
        if self.world_size > 1:
            sampler = DistributedSampler(dataset, num_replicas=1, rank=0, seed=torch.initial_seed() % 2**31)
        return self._loader(dataset, shuffle=True, batch_size=self.batch_size, sampler=sampler)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Moves the batch; a batch of draws (``device_cache``) then has its patches cut on ``device``
        from the training features, uploaded there at the first batch, and a batch of frames has them
        converted to patches there."""
        batch = super().transfer_batch_to_device(batch, device, dataloader_idx)
        if not isinstance(batch, dict):
            return batch
        if "draws" not in batch:
            return batch_of_patches(batch)
        source = self._device_source
        if source is None or source.device != batch["draws"]["rows"].device:
            source = self._device_source = PatchSource.upload(self.cache, self.train_set.rows, device)
        return self.train_set.assemble(batch, source)

    def _check_batch(self, n: int, what: str) -> None:
        """``n``: the clips of this process (its share under DDP)."""
        if n < self.batch_size:
            each = f" per process ({self.world_size} processes)" if self.world_size > 1 else ""
            raise DataError(
                f"the {what} set has {n} usable clips{each}, fewer than one batch of {self.batch_size} "
                "(incomplete batches are dropped); lower --data.batch_size"
            )


class SSLDataModule(AudioDataModule):
    """Unlabelled pretraining: batches of two views (and backgrounds) per clip of the training split.

    When some training clips carry a single label, batches also hold ``target`` (the index in the
    sorted ``classes``, -1 for the other clips), used only by ``SimCLR(online_probe=True)``.

    Args:
        knn_splits: ``(bank, query)`` splits for the kNN monitor (``ser_ssl.callbacks.KNNMonitor``),
            used only when their clips carry single labels; ``null`` turns the monitor's data off.
        distinct_backgrounds: take the two views' backgrounds from two different clips, as the paper's
            public code did (by default each is drawn from the other clips independently).
        **kwargs: the settings of :class:`AudioDataModule`.
    """

    def __init__(
        self,
        knn_splits: tuple[str, str] | None = ("train", "val"),
        distinct_backgrounds: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.knn_splits = (
            None if knn_splits is None else (split_name(knn_splits[0]), split_name(knn_splits[1]))
        )
        self.distinct_backgrounds = distinct_backgrounds
        self.classes: list[str] = []  # sorted single labels of the training split (for the online probe)
        self.knn_classes: list[str] = []  # names of the kNN loaders' integer labels
        self.share: list[int] = []  # this process's training clips with a per-node cache (positions)

    @property
    def per_node_cache(self) -> bool:
        """Whether each of several nodes caches only what its own processes read."""
        nodes = getattr(self.trainer, "num_nodes", 1) if self.trainer is not None else 1
        return self.prepare_data_per_node and nodes > 1

    def needed_clips(self, clips: list[Clip]) -> list[Clip]:
        """On several nodes with their own caches: the training clips of this node's processes'
        shares and of the normalisation sample, and every clip of the other splits; else all."""
        if not self.per_node_cache:
            return clips
        train = self.training(clips)
        per_node = self.world_size // self.trainer.num_nodes
        ranks = range(self.trainer.node_rank * per_node, (self.trainer.node_rank + 1) * per_node)
        keep = {train[j] for r in ranks for j in self.deal(len(train), r)} | set(self.norm_sample(clips))
        return [c for i, c in enumerate(clips) if c.split != self.train_split or i in keep]

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        train = self.training(self.listed)
        # from the listed clips, so that every node's online probe has the same classes
        self.classes = single_labels(self.listed[i] for i in train)
        if not self.per_node_cache:
            return
        # dealt from the listed clips, as the cache build was; unusable clips make a share shorter
        mine = self.usable([train[j] for j in self.deal(len(train), self.rank)])
        fewest = self.trainer.strategy.reduce(
            torch.tensor(len(mine), device=self.trainer.strategy.root_device), reduce_op="min"
        )
        self.share = mine[: int(fewest)]

    def known_splits(self) -> set[str]:
        return super().known_splits() | set(self.knn_splits or ())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def train_targets(self, idx: list[int]) -> list[int] | None:
        """Class index of each training clip for the online probe: -1 for clips without exactly one
        label (unlabelled or multi-label); ``None`` when no clip has a single label."""
        return self.single_label_targets(idx, self.classes) if self.classes else None

    def knn_dataloaders(self) -> tuple[DataLoader, DataLoader] | None:
        """Centre patches of the labelled bank and query clips, or ``None`` when there are none."""
        if self.knn_splits is None:
            return None
        bank, query = (self.split_indices(split) for split in self.knn_splits)
        if self.per_node_cache and self.knn_splits[0] == self.train_split:
            bank = self.usable(self.norm_sample(self.listed))  # the training clips every node holds
        clips = [self.clips[i] for i in bank + query]
        if not bank or not query or any(len(c.labels) != 1 for c in clips):
            log.info("no kNN monitor data: splits %s need clips with one label each", self.knn_splits)
            return None
        self.knn_classes = single_labels(self.clips[i] for i in bank)
        known = set(self.knn_classes)
        query = [i for i in query if self.clips[i].label in known]  # unseen classes cannot be voted for
        if not query:
            log.warning(
                "no kNN monitor: no clip of split '%s' has a class of split '%s' (%d classes)",
                *reversed(self.knn_splits),
                len(known),
            )
            return None

        def loader(idx: list[int]) -> DataLoader:
            targets = self.single_label_targets(idx, self.knn_classes)
            ds = CentrePatchDataset(self.cache, [self.rows[i] for i in idx], targets, self.patch_frames)
            return DataLoader(ds, batch_size=self.batch_size, num_workers=0, collate_fn=as_batch)

        return loader(bank), loader(query)

    def train_dataloader(self) -> DataLoader:
        idx = self.share if self.per_node_cache else self.rank_share(self.split_indices(self.train_split))
        self._check_batch(len(idx), "pretraining")
        rows = [self.rows[i] for i in idx]
        ds = TwoViewDataset(
            self.cache,
            rows,
            self.patch_frames,
            self.rank,
            targets=self.train_targets(idx),
            deliver=self.deliver(rows),
            distinct_backgrounds=self.distinct_backgrounds,
        )
        return self._train_loader(ds)


class LabeledDataModule(AudioDataModule):
    """Classification: random patches for training, whole clips for evaluation.

    Single-label data gives class indices (``long``) as targets; multi-label data (any clip with
    several labels, e.g. FSD50K) gives multi-hot ``float`` vectors ``[num_classes]`` per clip, which
    each evaluation batch stacks to ``[clips, num_classes]`` for evaluation. ``classes`` is the sorted
    vocabulary of the training split's labels (every label of every clip).

    Args:
        eval_hop_frames: hop between evaluation windows (default: ``patch_frames``, no overlap).
        train_hop_frames: ``null`` (default) starts each training patch at a uniformly random frame;
            an int draws it from the sliding windows with that hop instead, so every clip has a
            fixed, finite set of training patches and a frozen encoder's embeddings of them can be
            computed once (``LinearProbe(cache_embeddings=True)``; ``configs/probe.yaml`` uses 50).
        eval_batch_size: clips per evaluation batch (all windows of a clip stay in one batch).
        val_split / test_split: manifest split names; a missing validation split skips validation.
        label_fraction: share of the training clips whose labels are used (the label-efficiency
            protocol). Single-label: drawn per class so the class balance stays, at least one clip
            per class. Multi-label (classes overlap, so no exact stratification): first one clip for
            every class not yet covered, classes taken rarest first, then clips in a seeded random
            order until the share is reached; so every class keeps a positive, and the subset can
            exceed the share by at most one clip per class. The subsets are nested either way: for
            one ``label_seed`` a smaller fraction keeps a subset of the clips of a larger one.
            Validation and test always use every clip; the normalisation statistics use the audio
            (not the labels) of every training clip.
        label_seed: seed of that draw.
        multilabel: multi-hot targets even when every clip has one label (``true``), or refuse
            multi-label data (``false``); ``null`` (default): multi-label when any clip of the data
            set has several labels. In multi-label mode, labels of validation and test clips that no
            training clip has are dropped with one warning per split (the clips stay, scored on
            their other labels); single-label mode refuses such clips instead.
    """

    def __init__(
        self,
        eval_hop_frames: int | None = None,
        train_hop_frames: int | None = None,
        eval_batch_size: int = 16,
        val_split: str = "val",
        test_split: str = "test",
        label_fraction: float = 1.0,
        label_seed: int = 0,
        multilabel: bool | None = None,
        **kwargs,
    ) -> None:
        if not 0.0 < label_fraction <= 1.0:
            raise ConfigError(f"label_fraction must be in (0, 1], got {label_fraction}")
        if train_hop_frames is not None and train_hop_frames < 1:
            raise ConfigError(f"train_hop_frames must be null or at least 1, got {train_hop_frames}")
        super().__init__(**kwargs)
        self.eval_hop_frames = eval_hop_frames
        self.train_hop_frames = train_hop_frames
        self.eval_batch_size = eval_batch_size
        self.val_split = split_name(val_split)
        self.test_split = split_name(test_split)
        self.label_fraction = label_fraction
        self.label_seed = label_seed
        self.force_multilabel = multilabel
        self.multilabel: bool | None = multilabel  # decided in setup when None
        self.classes: list[str] = []
        self.train_idx: list[int] = []  # positions in self.clips of the training clips with labels

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        unlabeled = [str(c.path) for c in self.clips if not c.labels]
        if unlabeled:
            raise DataError(
                f"{len(unlabeled)} clips have no label (e.g. {unlabeled[0]}); a labelled task needs one"
            )
        multi = [c for c in self.clips if len(c.labels) > 1]
        if multi and self.force_multilabel is False:
            raise DataError(
                f"{self.data_source.describe()}: {len(multi)} clips have several labels "
                f"(e.g. {multi[0].path}: {list(multi[0].labels)}) but multilabel is false; set "
                "--data.init_args.multilabel true (or leave it null) to train a multi-label classifier"
            )
        self.multilabel = bool(multi) if self.force_multilabel is None else self.force_multilabel
        if multi and self.force_multilabel is None:  # one stray row switches the metrics: say so
            log.info(
                "%s: %d clips have several labels (e.g. %s: %s), so the classifier is multi-label (mAP, "
                "ROC-AUC); --data.init_args.multilabel false refuses such clips instead",
                self.data_source.describe(),
                len(multi),
                multi[0].path,
                list(multi[0].labels),
            )
        train = self.split_indices(self.train_split)
        self.classes = sorted({label for i in train for label in self.clips[i].labels})
        if len(self.classes) < 2:
            raise DataError(
                f"{self.data_source.describe()}: the usable clips of split '{self.train_split}' have one "
                f"class only ({self.classes}); a classifier needs at least two (pretraining ignores labels)"
            )
        for split in (self.val_split, self.test_split):
            # unseen labels fail (single-label) or warn (multi-label) now, not after training
            self._targets(self.split_indices(split), split, warn=True)
        self.train_idx = self.label_subset(train)
        if len(self.train_idx) < len(train):
            log.info(
                "label_fraction %g: training on %d of %d labelled clips",
                self.label_fraction,
                len(self.train_idx),
                len(train),
            )

    def label_subset(self, idx: list[int]) -> list[int]:
        """The ``label_fraction`` of ``idx`` whose labels are used (seeded; see the class docstring)."""
        if self.label_fraction >= 1.0:
            return list(idx)
        if self.multilabel:
            return self._multilabel_subset(idx)
        by_class: dict[str, list[int]] = defaultdict(list)
        for i in idx:
            by_class[self.clips[i].label].append(i)
        rng = np.random.default_rng(self.label_seed)
        keep = []
        for label in sorted(by_class):
            members = by_class[label]
            k = max(1, int(len(members) * self.label_fraction + 0.5))
            keep += [members[j] for j in rng.permutation(len(members))[:k]]
        return sorted(keep)

    def _multilabel_subset(self, idx: list[int]) -> list[int]:
        """One seeded order of the clips, independent of the fraction, decides everything: the first
        clip (in that order) of each still uncovered class, rarest class first, then the order's
        next clips up to the share. Both parts grow with the fraction, hence nested subsets."""
        order = [idx[j] for j in np.random.default_rng(self.label_seed).permutation(len(idx))]
        counts = Counter(label for i in idx for label in self.clips[i].labels)
        keep: set[int] = set()
        covered: set[str] = set()
        for label in sorted(counts, key=lambda c: (counts[c], c)):
            if label not in covered:
                first = next(i for i in order if label in self.clips[i].labels)
                keep.add(first)
                covered.update(self.clips[first].labels)
        target = int(len(idx) * self.label_fraction + 0.5)
        for i in order:
            if len(keep) >= target:
                break
            keep.add(i)
        return sorted(keep)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def known_splits(self) -> set[str]:
        return super().known_splits() | {self.val_split, self.test_split}

    def _targets(self, idx: list[int], split: str = "", warn: bool = False) -> tuple[list[int], np.ndarray]:
        """Cache rows and targets of the clips ``idx``: class indices, or multi-hot ``[len(idx), C]``."""
        known = set(self.classes)
        unknown = [i for i in idx if any(label not in known for label in self.clips[i].labels)]
        rows = [self.rows[i] for i in idx]
        targets = encode_labels([self.clips[i].labels for i in idx], self.classes, self.multilabel)
        if self.multilabel:
            if unknown and warn:
                labels = sorted({lb for i in unknown for lb in self.clips[i].labels if lb not in known})
                warnings.warn(
                    f"{self.data_source.describe()}: {len(unknown)} clips of split '{split}' have labels "
                    f"{labels} that no usable clip of the training split '{self.train_split}' has (e.g. "
                    f"{self.clips[unknown[0]].path}); these labels are ignored, the clips are scored on "
                    "their other labels",
                    stacklevel=2,
                )
            return rows, targets
        if unknown:
            labels = sorted({self.clips[i].label for i in unknown})
            raise DataError(
                f"{self.data_source.describe()}: {len(unknown)} clips of split '{split}' have labels "
                f"{labels} that no usable clip of the training split '{self.train_split}' has (e.g. "
                f"{self.clips[unknown[0]].path}); the classifier cannot predict them: give these classes "
                "usable training clips (move or add some) or remove the classes from the data"
            )
        return rows, targets

    def train_dataloader(self) -> DataLoader:
        idx = self.rank_share(self.train_idx)
        what = "training" if self.label_fraction >= 1 else f"training (label_fraction {self.label_fraction})"
        self._check_batch(len(idx), what)
        rows, targets = self._targets(idx)
        ds = LabeledPatchDataset(
            self.cache,
            rows,
            targets,
            self.patch_frames,
            self.rank,
            hop_frames=self.train_hop_frames,
            deliver=self.deliver(rows),
        )
        return self._train_loader(ds)

    def _eval_loader(self, split: str) -> DataLoader:
        idx = self.split_indices(split)
        if not idx:
            raise DataError(f"{self.data_source.describe()}: no usable clip in split '{split}'")
        rows, targets = self._targets(idx, split)
        ds = ClipWindowsDataset(self.cache, rows, targets, self.patch_frames, self.eval_hop_frames)
        return self._loader(
            ds, shuffle=False, batch_size=self.eval_batch_size, sampler=self._unpadded(ds, split)
        )

    def _unpadded(self, dataset: ClipWindowsDataset, split: str) -> UnrepeatedDistributedSampler | None:
        """Under DDP, every ``world_size``-th clip for this process and no repeats, so each clip counts
        once in the metrics (Lightning's default sampler pads the last round with repeated clips; the
        metrics are summed across processes, which need not see equally many clips)."""
        if self.world_size == 1:
            return None
        if len(dataset) < self.world_size:
            raise DataError(
                f"split '{split}' has {len(dataset)} usable clips, fewer than the {self.world_size} "
                "processes; evaluate with fewer devices (--trainer.devices)"
            )
        return UnrepeatedDistributedSampler(dataset, self.world_size, self.rank, shuffle=False)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader(self.val_split) if self.split_indices(self.val_split) else []

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_split)

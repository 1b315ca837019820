"""Data sources: one class per data set layout, each producing the same manifest (a list of Clip).

Everything after the source (cache, views, data modules) only sees clips, so a new layout is one
small class. Sources are picked in YAML with ``class_path``/``init_args`` (their ``__init__``
arguments are plain values for jsonargparse), for example::

    data:
      init_args:
        source:
          class_path: ser_ssl.data.ESC50
          init_args: {root: data/ESC-50-master, test_fold: 1}

Every source returns its clips sorted and reproducibly, so all DDP ranks see the same manifest;
seeded splits keep whole groups together and are stratified by class.
"""

from __future__ import annotations

import csv
import logging
import re
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from ser_ssl.data.manifest import Clip, check_duplicates, check_groups, parse_labels, read_manifest
from ser_ssl.errors import ConfigError, DataError, MissingFileError

__all__ = [
    "AUDIO_EXTENSIONS",
    "CSVManifest",
    "DataSource",
    "ESC50",
    "FSD50K",
    "FSDnoisy18k",
    "FolderSource",
    "UrbanSound8K",
    "stratified_group_split",
]

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")


class DataSource(ABC):
    """A data set on disk that yields clips. Subclasses implement :meth:`load`.

    :meth:`clips` is what the data modules call: it adds the checks every source must pass (at
    least one clip, no group in two splits), so a subclass cannot forget them.
    """

    #: The expected files and folders, shown in missing-file errors (and in the class docstring).
    layout: ClassVar[str] = ""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def prepare(self) -> None:
        """Make the data available on disk: nothing for data sets the user has; the built-in set
        (:class:`~ser_ssl.data.synthetic.SyntheticSource`) generates itself. Runs once per node,
        before :meth:`clips` (the data module's ``prepare_data``)."""
        return None

    @abstractmethod
    def load(self) -> list[Clip]:
        """Read the data set's metadata and return its clips, in a reproducible order."""

    def clips(self) -> list[Clip]:
        """The checked clips: raises :class:`DataError` for an empty set or a group in two splits."""
        if not self.root.exists():
            raise self._missing(self.root, "path")
        clips = self.load()
        if not clips:
            raise DataError(f"{self.describe()} holds no clips")
        clips = check_duplicates(clips, self.describe())
        check_groups(clips, self.describe())
        return clips

    def describe(self) -> str:
        """A short name for messages, e.g. ``ESC50(data/ESC-50-master)``."""
        return f"{type(self).__name__}({self.root})"

    def _require(self, path: Path, kind: str = "file") -> Path:
        """``path`` if it exists, else a :class:`MissingFileError` that shows the expected layout."""
        ok = path.is_dir() if kind == "folder" else path.is_file()
        if not ok:
            raise self._missing(path, kind)
        return path

    def _missing(self, path: Path, kind: str) -> MissingFileError:
        layout = f"; expected the layout\n{self.layout}" if self.layout else ""
        return MissingFileError(f"{self.describe()}: {kind} {path} does not exist{layout}")

    def _read_csv(self, path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
        """Rows of a headed CSV that must hold ``columns`` (a clear error instead of a KeyError)."""
        with self._require(path).open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(
                    f"{self.describe()}: {path} lacks the column(s) {missing} (has {reader.fieldnames}); "
                    f"is it the official file?"
                )
            return list(reader)

    def _report_unlisted(self, listed: Iterable[Path], *folders: Path) -> None:
        """Warn once about audio files in ``folders`` (not below them) that no metadata row lists.

        They are left out; a silent gap would hide a wrong or mixed-up download that changes every
        result. ``listed`` holds the paths of every metadata row, chosen for this run or not.
        """
        listed = set(listed)
        unlisted = [
            p
            for folder in folders
            if folder.is_dir()
            for p in sorted(folder.iterdir())
            if p.suffix.lower() in AUDIO_EXTENSIONS
            and not p.name.startswith(".")
            and p not in listed
            and p.is_file()
        ]
        if unlisted:
            log.warning(
                "%s: %d audio files are in no row of the metadata and are left out (e.g. %s); "
                "check that the metadata belongs to this audio, or move the extra files out",
                self.describe(),
                len(unlisted),
                unlisted[0],
            )


def _int(value: str, path: Path, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}: column '{column}' holds '{value}', not an integer") from None


def _wav(fname: str) -> str:
    """File name of a metadata row: FSD50K lists ids without the extension, other sets with it."""
    return fname if Path(fname).suffix else f"{fname}.wav"


def _check_fractions(**fractions: float) -> None:
    for name, f in fractions.items():
        if not 0.0 <= f < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {f}")
    if sum(fractions.values()) >= 1.0:
        raise ConfigError(f"{' + '.join(fractions)} must leave clips for training, got {fractions}")


def _apportion(sizes: list[int], caps: list[int], fraction: float, rng: np.random.Generator) -> list[int]:
    """Per-class counts close to ``fraction * size`` whose total is ``round(fraction * sum(sizes))``.

    Largest remainders (ties at random) get the extra ones, so that many small classes still give
    the split its share instead of each rounding down to zero; no class exceeds its cap.
    """
    exact = [n * fraction for n in sizes]
    counts = [min(int(e), c) for e, c in zip(exact, caps, strict=True)]
    target = min(int(sum(sizes) * fraction + 0.5), sum(caps))
    tiebreak = rng.random(len(sizes))
    order = sorted(range(len(sizes)), key=lambda k: (counts[k] - exact[k], tiebreak[k]))
    while sum(counts) < target:
        for k in order:
            if counts[k] < caps[k] and sum(counts) < target:
                counts[k] += 1
    return counts


def stratified_group_split(
    clips: Sequence[Clip], fractions: dict[str, float], seed: int, rest: str = "train"
) -> list[Clip]:
    """Move whole groups into the splits of ``fractions`` (in order) and the others into ``rest``.

    Groups are stratified by their most common label, and each class keeps at least one group in
    ``rest``, so every class can be trained on. The same clips and seed give the same split.
    """
    members: dict[str, list[int]] = defaultdict(list)
    for i, clip in enumerate(clips):
        members[clip.group].append(i)
    by_class: dict[str, list[str]] = defaultdict(list)
    for group, idx in members.items():
        counts = Counter(label for i in idx for label in clips[i].labels)
        key = min(counts, key=lambda label: (-counts[label], label)) if counts else ""
        by_class[key].append(group)
    classes = sorted(by_class)
    rng = np.random.default_rng(seed)
    order = {}
    for c in classes:
        groups = sorted(by_class[c])
        order[c] = [groups[j] for j in rng.permutation(len(groups))]
    sizes = [len(by_class[c]) for c in classes]
    left = [n - 1 for n in sizes]  # one group per class stays in `rest`
    split_of: dict[str, str] = {}
    taken = [0] * len(classes)
    for split, fraction in fractions.items():
        counts = _apportion(sizes, left, fraction, rng)
        for k, c in enumerate(classes):
            for group in order[c][taken[k] : taken[k] + counts[k]]:
                split_of[group] = split
            taken[k] += counts[k]
            left[k] -= counts[k]
    return [replace(clip, split=split_of.get(clip.group, rest)) for clip in clips]


class CSVManifest(DataSource):
    """A ``filename,label[,split,group,fold]`` CSV with paths relative to its folder.

    Several labels go in one cell separated by ``label_separator`` (``;``; set ``","`` for
    manifests that list several labels with commas); only it splits, so a quoted ``"Dog, barking"``
    is one label. An empty label marks an unlabelled clip. Without a ``split`` column every clip is
    in ``default_split``; with one, rows with an empty split are left out with a warning (they
    could be test clips). Without a group each file is its own group. A group in two splits is an
    error (fix the CSV).
    """

    layout = "manifest.csv with the header filename,label[,split,group,fold]"

    def __init__(self, path: str, default_split: str = "train", label_separator: str = ";") -> None:
        super().__init__(path)
        if not label_separator:
            raise ConfigError("CSVManifest label_separator must not be empty; use ';' or ','")
        self.default_split = default_split
        self.label_separator = label_separator

    def load(self) -> list[Clip]:
        return read_manifest(self.root, self.default_split, self.label_separator)


class FolderSource(DataSource):
    """Audio files in class folders, already split or split here.

    Already split (``root`` has a ``train`` folder)::

        root/train/<class>/**/*.wav
        root/val/<class>/...      (optional; otherwise ``val_fraction`` of train is held out)
        root/test/<class>/...     (optional)

    Unsplit: ``root/<class>/**/*.wav``, split into train/val/test by whole groups, stratified by
    class and seeded. With ``labelled=False`` every audio file under ``root`` (any depth) becomes
    an unlabelled training clip, for pretraining on a plain folder.

    A clip's group is its path below ``root`` without the extension (stems like ``0001`` repeat
    across class folders, so the stem alone would join unrelated clips). When clips of one
    recording share a name pattern, ``group_regex`` sets the group to the regex's first match in
    the file stem (its first capture group if it has one), e.g. ``^[^_]+`` for ``rec12_take3.wav``.

    Args:
        root: the data set folder.
        extensions: audio file suffixes to take (case-insensitive); hidden files are skipped.
        val_fraction: share of (training) groups for validation when there is no ``val`` folder.
        test_fraction: share of groups for testing, for the unsplit layout only.
        seed: seed of the split.
        labelled: ``False`` takes every audio file without labels, all in the training split.
        group_regex: optional pattern that extracts the group from the file stem.
    """

    layout = "root/<class>/*.wav, or root/train/<class>/*.wav with optional root/val/... and root/test/..."
    #: Split folder names (in any case: ``Train``, ``TEST``) and the split each holds.
    SPLIT_FOLDERS: ClassVar[dict[str, str]] = {
        "train": "train",
        "val": "val",
        "valid": "val",
        "validation": "val",
        "test": "test",
    }

    def __init__(
        self,
        root: str,
        extensions: list[str] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        labelled: bool = True,
        group_regex: str | None = None,
    ) -> None:
        super().__init__(root)
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions or ())
        self.extensions = self.extensions or AUDIO_EXTENSIONS
        _check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.labelled = labelled
        try:
            self.group_regex = re.compile(group_regex) if group_regex else None
        except re.error as err:
            raise ConfigError(f"group_regex '{group_regex}' is not a regular expression ({err})") from err

    def _audio_files(self, folder: Path) -> list[Path]:
        return sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in self.extensions
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            and p.is_file()
        )

    def _group(self, path: Path) -> str:
        if self.group_regex is not None:
            match = self.group_regex.search(path.stem)
            if match:
                return match.group(1) if self.group_regex.groups else match.group(0)
        return path.relative_to(self.root).with_suffix("").as_posix()

    def _labelled_clips(self, folder: Path, split: str) -> list[Clip]:
        """Clips of ``folder/<class>/**``; a file outside a class folder is an error."""
        clips = []
        for path in self._audio_files(folder):
            parts = path.relative_to(folder).parts
            if len(parts) < 2:
                raise DataError(
                    f"{self.describe()}: {path} is not inside a class folder; expected {self.layout} "
                    "(or set labelled: false for unlabelled audio)"
                )
            clips.append(Clip(path=path, labels=(parts[0],), split=split, group=self._group(path)))
        return clips

    def _split_folders(self) -> dict[str, Path]:
        """The root's split folders by split (train, val, test), whatever their case."""
        found: dict[str, Path] = {}
        for folder in sorted(self.root.iterdir()):
            split = self.SPLIT_FOLDERS.get(folder.name.lower())
            if split is None or not folder.is_dir():
                continue
            if split in found:
                raise DataError(
                    f"{self.describe()}: the folders {found[split].name} and {folder.name} both hold the "
                    f"{split} split; merge them into one"
                )
            found[split] = folder
        return dict(sorted(found.items(), key=lambda item: ("train", "val", "test").index(item[0])))

    def load(self) -> list[Clip]:
        self._require(self.root, "folder")
        if not self.labelled:
            clips = [Clip(path=p, split="train", group=self._group(p)) for p in self._audio_files(self.root)]
        elif "train" in (splits := self._split_folders()):
            others = sorted(
                p.name
                for p in self.root.iterdir()
                if p.is_dir() and not p.name.startswith(".") and p not in splits.values()
            )
            if others:
                log.warning("%s: ignoring folders %s (only train/val/test are read)", self.describe(), others)
            clips = []
            for split, folder in splits.items():
                clips += self._labelled_clips(folder, split)
            if "val" not in splits and self.val_fraction > 0:
                train = [c for c in clips if c.split == "train"]
                held = stratified_group_split(train, {"val": self.val_fraction}, self.seed)
                clips = held + [c for c in clips if c.split != "train"]
        else:
            clips = self._labelled_clips(self.root, "train")
            fractions = {"test": self.test_fraction, "val": self.val_fraction}
            clips = stratified_group_split(clips, {k: f for k, f in fractions.items() if f > 0}, self.seed)
        if not clips:
            raise DataError(
                f"{self.describe()}: no audio files with the extensions {list(self.extensions)}; "
                f"expected {self.layout}"
            )
        return clips


class FSD50K(DataSource):
    """FSD50K as released on Zenodo: 200 classes, multi-label; splits train/val (dev) and test (eval).

    Expected layout::

        root/FSD50K.dev_audio/<fname>.wav
        root/FSD50K.eval_audio/<fname>.wav
        root/FSD50K.ground_truth/dev.csv         fname,labels,mids,split   (split: train | val)
        root/FSD50K.ground_truth/eval.csv        fname,labels,mids
        root/FSD50K.ground_truth/vocabulary.csv  index,label,mid           (no header)

    Labels are the ``labels`` cells (names separated by commas); each clip is its own group (the
    official validation split already keeps uploaders apart). Downstream training on FSD50K needs
    multi-label support; pretraining ignores the labels.
    """

    layout = (
        "root/FSD50K.dev_audio/*.wav, root/FSD50K.eval_audio/*.wav, "
        "root/FSD50K.ground_truth/{dev,eval,vocabulary}.csv"
    )

    def __init__(self, root: str) -> None:
        super().__init__(root)

    def vocabulary(self) -> list[str]:
        """The 200 class names in the official index order (``vocabulary.csv``)."""
        path = self._require(self.root / "FSD50K.ground_truth" / "vocabulary.csv")
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
        if any(len(r) < 2 for r in rows):
            raise DataError(f"{self.describe()}: {path} should have rows 'index,label,mid' without header")
        return [r[1] for r in sorted(rows, key=lambda r: _int(r[0], path, "index"))]

    def load(self) -> list[Clip]:
        truth = self.root / "FSD50K.ground_truth"
        vocabulary = set(self.vocabulary())
        clips = []
        for name, audio, splits in (
            ("dev.csv", "FSD50K.dev_audio", {"train", "val"}),
            ("eval.csv", "FSD50K.eval_audio", None),
        ):
            csv_path = truth / name
            rows = self._read_csv(csv_path, ("fname", "labels") + (("split",) if splits else ()))
            folder = self._require(self.root / audio, "folder")
            for row in rows:
                split = row["split"] if splits else "test"
                if splits and split not in splits:
                    raise DataError(f"{csv_path}: split '{split}' of {row['fname']} is not train or val")
                labels = parse_labels(row["labels"], ",")
                unknown = set(labels) - vocabulary
                if unknown:
                    raise DataError(
                        f"{csv_path}: labels {sorted(unknown)} of {row['fname']} are not in vocabulary.csv"
                    )
                clips.append(
                    Clip(path=folder / _wav(row["fname"]), labels=labels, split=split, group=row["fname"])
                )
        self._report_unlisted(
            (c.path for c in clips), self.root / "FSD50K.dev_audio", self.root / "FSD50K.eval_audio"
        )
        return clips


class FSDnoisy18k(DataSource):
    """FSDnoisy18k: 20 classes; a large noisy-label training set, a small clean one, a clean test set.

    Expected layout::

        root/FSDnoisy18k.audio_train/<fname>
        root/FSDnoisy18k.audio_test/<fname>
        root/FSDnoisy18k.meta/train.csv   fname,label,aso_id,manually_verified,noisy_small
        root/FSDnoisy18k.meta/test.csv    fname,label,aso_id

    ``train_set`` picks the training clips: ``noisy`` (``manually_verified == 0``), ``clean`` (the
    small manually verified subset, ``manually_verified == 1``), ``noisy_small`` (the noisy subset
    of about the clean one's size, ``noisy_small == 1``) or ``all``. The test split is always the
    official test set.

    ``val_set`` picks the validation clips, as the paper's two protocols need them:

    - ``split`` (default): ``val_fraction`` of the chosen training clips, stratified by class and
      seeded by ``seed``; 0 keeps them all for training and skips validation. The small clean-set
      task is ``train_set: clean`` with ``val_fraction: 0.15``.
    - ``clean``: the whole clean set, while training on ``noisy`` or ``noisy_small`` (the noisy-label
      task: pretraining, probes and fine-tuning on the noisy set are validated on clean labels).
      ``val_fraction`` must then be 0, so that no noisy clip is held out as well.

    Each clip is its own group and has the one label of its ``label`` cell.
    """

    layout = (
        "root/FSDnoisy18k.audio_train/*.wav, root/FSDnoisy18k.audio_test/*.wav, "
        "root/FSDnoisy18k.meta/{train,test}.csv"
    )
    TRAIN_SETS: ClassVar[tuple[str, ...]] = ("noisy", "clean", "noisy_small", "all")
    VAL_SETS: ClassVar[tuple[str, ...]] = ("split", "clean")

    def __init__(
        self,
        root: str,
        train_set: str = "noisy",
        val_fraction: float = 0.1,
        seed: int = 0,
        val_set: str = "split",
    ) -> None:
        super().__init__(root)
        if train_set not in self.TRAIN_SETS:
            raise ConfigError(
                f"FSDnoisy18k train_set must be one of {list(self.TRAIN_SETS)}, got '{train_set}'"
            )
        if val_set not in self.VAL_SETS:
            raise ConfigError(f"FSDnoisy18k val_set must be one of {list(self.VAL_SETS)}, got '{val_set}'")
        _check_fractions(val_fraction=val_fraction)
        if val_set == "clean" and train_set in ("clean", "all"):
            raise ConfigError(
                f"FSDnoisy18k val_set 'clean' validates on the clean set, which train_set '{train_set}' "
                "trains on; use train_set noisy or noisy_small, or val_set split"
            )
        if val_set == "clean" and val_fraction > 0:
            raise ConfigError(
                f"FSDnoisy18k val_set 'clean' takes the clean set as validation; set val_fraction 0 (got "
                f"{val_fraction}, which would also hold out that share of the training clips)"
            )
        self.train_set = train_set
        self.val_set = val_set
        self.val_fraction = val_fraction
        self.seed = seed

    def _selected(self, row: dict[str, str], path: Path) -> bool:
        if self.train_set == "all":
            return True
        if self.train_set == "noisy_small":
            return _int(row["noisy_small"], path, "noisy_small") == 1
        verified = self._verified(row, path)
        return verified if self.train_set == "clean" else not verified

    @staticmethod
    def _verified(row: dict[str, str], path: Path) -> bool:
        return _int(row["manually_verified"], path, "manually_verified") == 1

    def load(self) -> list[Clip]:
        meta = self.root / "FSDnoisy18k.meta"
        train_csv, test_csv = meta / "train.csv", meta / "test.csv"
        train_rows = self._read_csv(train_csv, ("fname", "label", "manually_verified", "noisy_small"))
        test_rows = self._read_csv(test_csv, ("fname", "label"))
        train_dir = self._require(self.root / "FSDnoisy18k.audio_train", "folder")
        test_dir = self._require(self.root / "FSDnoisy18k.audio_test", "folder")

        def train_clip(row: dict[str, str], split: str) -> Clip:
            path = train_dir / _wav(row["fname"])
            return Clip(path=path, labels=(row["label"],), split=split, group=f"train/{row['fname']}")

        selected = [self._selected(r, train_csv) for r in train_rows]
        train = [train_clip(r, "train") for r, s in zip(train_rows, selected, strict=True) if s]
        if self.val_fraction > 0:
            train = stratified_group_split(train, {"val": self.val_fraction}, self.seed)
        if self.val_set == "clean":
            train += [
                train_clip(r, "val")
                for r, s in zip(train_rows, selected, strict=True)
                if not s and self._verified(r, train_csv)
            ]
        test = [
            Clip(
                path=test_dir / _wav(r["fname"]),
                labels=(r["label"],),
                split="test",
                group=f"test/{r['fname']}",
            )
            for r in test_rows
        ]
        listed = [train_dir / _wav(r["fname"]) for r in train_rows] + [c.path for c in test]
        self._report_unlisted(listed, train_dir, test_dir)
        return train + test


def _check_folds(name: str, n_folds: int, test_fold: int, val_fold: int | None) -> None:
    for what, fold in (("test_fold", test_fold), ("val_fold", val_fold)):
        if fold is not None and not 1 <= fold <= n_folds:
            raise ConfigError(f"{name} {what} must be in 1..{n_folds}, got {fold}")
    if val_fold == test_fold:
        raise ConfigError(f"{name} val_fold and test_fold must differ, both are {test_fold}")


def _fold_split(fold: int, test_fold: int, val_fold: int | None) -> str:
    return "test" if fold == test_fold else "val" if fold == val_fold else "train"


class ESC50(DataSource):
    """ESC-50: 2000 five-second clips, 50 classes, 5 official folds (cross-validate over test_fold).

    Expected layout (the GitHub archive, ``ESC-50-master``)::

        root/audio/<filename>.wav
        root/meta/esc50.csv   filename,fold,target,category,esc10,src_file,take

    The label is ``category``. Split ``test`` is ``test_fold``, ``val`` is ``val_fold`` if given,
    every other fold is ``train``. The group is ``src_file``: clips cut from one recording are in
    one fold, so they never cross splits. ``esc10=True`` keeps only the ESC-10 subset.
    """

    layout = "root/audio/*.wav and root/meta/esc50.csv"
    N_FOLDS: ClassVar[int] = 5

    def __init__(
        self, root: str, test_fold: int = 1, val_fold: int | None = None, esc10: bool = False
    ) -> None:
        super().__init__(root)
        _check_folds("ESC50", self.N_FOLDS, test_fold, val_fold)
        self.test_fold = test_fold
        self.val_fold = val_fold
        self.esc10 = esc10

    def load(self) -> list[Clip]:
        meta = self.root / "meta" / "esc50.csv"
        rows = self._read_csv(meta, ("filename", "fold", "category", "src_file", "esc10"))
        audio = self._require(self.root / "audio", "folder")
        clips = []
        for r in rows:
            if self.esc10 and r["esc10"].strip().lower() != "true":
                continue
            fold = _int(r["fold"], meta, "fold")
            clips.append(
                Clip(
                    path=audio / r["filename"],
                    labels=(r["category"],),
                    split=_fold_split(fold, self.test_fold, self.val_fold),
                    group=r["src_file"],
                    fold=fold,
                )
            )
        self._report_unlisted((audio / r["filename"] for r in rows), audio)
        return clips


class UrbanSound8K(DataSource):
    """UrbanSound8K: 8732 slices of urban sounds, 10 classes, 10 official folds.

    Expected layout::

        root/audio/fold1/<slice_file_name> ... root/audio/fold10/...
        root/metadata/UrbanSound8K.csv   slice_file_name,fsID,start,end,salience,fold,classID,class

    The label is ``class``. Split ``test`` is ``test_fold``, ``val`` is ``val_fold`` if given,
    the other folds are ``train``. The group is ``fsID``, the Freesound recording the slices were
    cut from; the official folds keep each recording in one fold.
    """

    layout = "root/audio/fold{1..10}/*.wav and root/metadata/UrbanSound8K.csv"
    N_FOLDS: ClassVar[int] = 10

    def __init__(self, root: str, test_fold: int = 10, val_fold: int | None = None) -> None:
        super().__init__(root)
        _check_folds("UrbanSound8K", self.N_FOLDS, test_fold, val_fold)
        self.test_fold = test_fold
        self.val_fold = val_fold

    def load(self) -> list[Clip]:
        meta = self.root / "metadata" / "UrbanSound8K.csv"
        rows = self._read_csv(meta, ("slice_file_name", "fsID", "fold", "class"))
        audio = self._require(self.root / "audio", "folder")
        clips = []
        for r in rows:
            fold = _int(r["fold"], meta, "fold")
            clips.append(
                Clip(
                    path=audio / f"fold{fold}" / r["slice_file_name"],
                    labels=(r["class"],),
                    split=_fold_split(fold, self.test_fold, self.val_fold),
                    group=r["fsID"],
                    fold=fold,
                )
            )
        folds = (audio / f"fold{k}" for k in range(1, self.N_FOLDS + 1))
        self._report_unlisted((c.path for c in clips), *folds)
        return clips

"""Writing exported embeddings to disk: :class:`EmbeddingWriter`, the callback of ``ser-ssl predict``.

Files in ``output_dir`` (one row per clip, rows in the data set's order; all arrays load with
``np.load(path)``, no pickling)::

    embeddings.npz   embeddings  float32 [N, D]   clip embeddings (mean over the clip's windows)
                     filenames   str [N]          the clip's path relative to the data set's folder
                                                  (for a CSV manifest: its ``filename`` column)
                     paths       str [N]          the absolute path
                     labels      str [N]          ``""`` when unlabelled; several joined with ``;``
                     split       str [N]          the manifest split
    clips.csv        row,filename,label,split     the same table for pandas or a spreadsheet:
                                                  ``pd.read_csv("clips.csv")`` row i is embeddings[i]
    frames.npz       (with ``frame_level``) the ragged frame sequences, flat:
                     frames      float32 [sum T_i, D]
                     offsets     int64 [N + 1]    clip i is frames[offsets[i]:offsets[i + 1]]
                     timestamps  float64 [sum T_i] frame centres in seconds from the clip's start
                     filenames   str [N]

With several processes (DDP) each rank first writes its rows (frames included) to
``.part-<rank>-embeddings.npz`` in ``output_dir`` and waits for the others; rank 0 then merges them
into the files above (sorted by clip, clips a sampler repeated kept once) and deletes the parts, so
``output_dir`` must be on a file system all ranks share. Rows are held in
memory (as numpy) until the epoch ends: for frame-level export of a very large data set, export one
split at a time (``--data.predict_split``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from ser_ssl.data.manifest import Clip
from ser_ssl.errors import DataError
from ser_ssl.files import resolved

EMBEDDINGS_FILE = "embeddings.npz"
FRAMES_FILE = "frames.npz"
CLIPS_FILE = "clips.csv"


class EmbeddingWriter(BasePredictionWriter):
    """Collects :class:`~ser_ssl.tasks.Embed` predictions and writes the files of this module's docstring.

    Rows are taken per batch as numpy (so Lightning need not keep the predictions: pass
    ``--return_predictions false``) and written once the predict epoch ends; the clip of each row is
    looked up in the data module's ``clips`` by the batch's ``index``.

    Args:
        output_dir: where to write; ``None`` means the trainer's ``default_root_dir``.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self._reset()

    def _reset(self) -> None:
        self._index: list[np.ndarray] = []
        self._embeddings: list[np.ndarray] = []
        self._frames: list[np.ndarray] = []
        self._timestamps: list[np.ndarray] = []

    def directory(self, trainer: L.Trainer) -> Path:
        return Path(self.output_dir if self.output_dir is not None else trainer.default_root_dir)

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._index.append(prediction["index"].cpu().numpy())
        self._embeddings.append(prediction["embedding"].cpu().numpy().astype(np.float32))
        if "frames" in prediction:
            self._frames += [f.cpu().numpy().astype(np.float32) for f in prediction["frames"]]
            self._timestamps += [t.cpu().numpy() for t in prediction["timestamps"]]

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = self.directory(trainer)
        out.mkdir(parents=True, exist_ok=True)
        rows = self._gather(trainer, out)
        if rows is not None:
            self._write(trainer, out, *rows)
        self._reset()

    def _local_rows(self) -> dict[str, np.ndarray]:
        """This process's rows: clip indices, embeddings and the flat frame layout."""
        if not self._index:
            return {"index": np.zeros((0,), np.int64), "embeddings": np.zeros((0, 0), np.float32)}
        part = {"index": np.concatenate(self._index), "embeddings": np.concatenate(self._embeddings)}
        if self._frames:
            part["frames"] = np.concatenate(self._frames)
            part["lengths"] = np.array([len(f) for f in self._frames], dtype=np.int64)
            part["timestamps"] = np.concatenate(self._timestamps)
        return part

    def _gather(self, trainer: L.Trainer, out: Path) -> tuple | None:
        """All ranks' rows on rank 0 (``None`` elsewhere), sorted by clip index, each clip once."""
        part = self._local_rows()
        if trainer.world_size > 1:
            own = out / f".part-{trainer.global_rank}-embeddings.npz"
            _save_npz(own, **part)
            trainer.strategy.barrier("EmbeddingWriter")
            if not trainer.is_global_zero:
                return None
            paths = [out / f".part-{r}-embeddings.npz" for r in range(trainer.world_size)]
            parts = [dict(np.load(p)) for p in paths]
            for p in paths:
                p.unlink()
        else:
            parts = [part]
        parts = [p for p in parts if len(p["index"])]
        if not parts:
            raise DataError("EmbeddingWriter: the predict loop gave no clips to write")
        index = np.concatenate([p["index"] for p in parts])
        embeddings = np.concatenate([p["embeddings"] for p in parts])
        order = np.unique(index, return_index=True)[1]  # sorted by clip, duplicates (sampler padding) out
        frames = None
        if "frames" in parts[0]:
            seqs = [s for p in parts for s in np.split(p["frames"], np.cumsum(p["lengths"])[:-1])]
            times = [t for p in parts for t in np.split(p["timestamps"], np.cumsum(p["lengths"])[:-1])]
            frames = ([seqs[i] for i in order], [times[i] for i in order])
        return index[order], embeddings[order], frames

    def _write(
        self,
        trainer: L.Trainer,
        out: Path,
        index: np.ndarray,
        embeddings: np.ndarray,
        frames: tuple[list[np.ndarray], list[np.ndarray]] | None,
    ) -> None:
        dm = trainer.datamodule
        clips: list[Clip] = [dm.clips[i] for i in index]
        root = _data_folder(dm)
        filenames = np.array([_relative(c.path, root) for c in clips], dtype=str)
        labels = np.array([";".join(c.labels) for c in clips], dtype=str)
        splits = np.array([c.split for c in clips], dtype=str)
        paths = np.array([resolved(c.path) for c in clips], dtype=str)
        _save_npz(
            out / EMBEDDINGS_FILE,
            embeddings=embeddings,
            filenames=filenames,
            paths=paths,
            labels=labels,
            split=splits,
        )
        tmp = out / f".{CLIPS_FILE}.tmp"
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "filename", "label", "split"])
            writer.writerows(zip(range(len(clips)), filenames, labels, splits, strict=True))
        os.replace(tmp, out / CLIPS_FILE)
        if frames is not None:
            seqs, times = frames
            offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
            _save_npz(
                out / FRAMES_FILE,
                frames=np.concatenate(seqs).astype(np.float32),
                offsets=offsets,
                timestamps=np.concatenate(times),
                filenames=filenames,
            )
        trainer.print(f"EmbeddingWriter: {len(clips)} clips x {embeddings.shape[1]} dims written to {out}")


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to a temporary name, then rename: a half-written file is never read."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _data_folder(dm: Any) -> Path | None:
    """The folder clip names are given relative to: a manifest's folder, or the data set's root."""
    source = getattr(dm, "data_source", None)
    root = getattr(source, "root", None)
    if root is None:
        return None
    root = Path(root)
    return root.parent if root.is_file() else root


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)

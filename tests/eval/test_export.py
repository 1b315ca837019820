"""Embedding export through ``ser-ssl predict``: files, their order and contents, frame sequences."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from ser_ssl.audio import LogMel, LogMelConfig, Standardize, load_audio
from ser_ssl.cli import cli_main
from ser_ssl.inference import TimestampGrid, frame_stride, window_starts
from ser_ssl.tasks import load_pretrained
from tests.conftest import tile_to, tiny_args

PATCH = 101
HOP_S = LogMelConfig().hop_length / LogMelConfig().sample_rate


def manifest_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def export(pretrained: Path, manifest: Path, root: Path, *extra: str) -> None:
    args = tiny_args("export", root, manifest, pretrained / "cache")
    ckpt = str(pretrained / "pretrain" / "checkpoints" / "last.ckpt")
    cli_main(["predict", *args, "--model.init_args.encoder_checkpoint", ckpt, *extra])


def clip_windows(path: Path) -> tuple[torch.Tensor, list[int], int]:
    """The clip's windows computed here from its audio, as the cache stores features (float16)."""
    config = LogMelConfig()
    mel = LogMel(config)(load_audio(path, config.sample_rate)).half().float().T.numpy()  # [T, n_mels]
    starts = window_starts(len(mel), PATCH, PATCH)
    tiled = tile_to(mel, PATCH)
    windows = torch.stack([torch.from_numpy(tiled[s : s + PATCH].T.copy()) for s in starts])
    return windows.unsqueeze(1), starts, len(mel)


@pytest.fixture(scope="module")
def exported(pretrained, tiny_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    export(pretrained, tiny_data, root, "--model.init_args.frame_level", "true")
    return root


@pytest.mark.slow
def test_export_writes_one_row_per_clip_in_manifest_order(exported, tiny_data):
    rows = manifest_rows(tiny_data)
    out = np.load(exported / "embeddings.npz")  # no allow_pickle: every array is plain
    assert out["embeddings"].dtype == np.float32 and out["embeddings"].shape == (len(rows), 32)
    assert out["filenames"].tolist() == [r["filename"] for r in rows]
    assert out["labels"].tolist() == [r["label"] for r in rows]
    assert out["split"].tolist() == [r["split"] for r in rows]
    with (exported / "clips.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [(int(t["row"]), t["filename"], t["label"], t["split"]) for t in table] == [
        (i, r["filename"], r["label"], r["split"]) for i, r in enumerate(rows)
    ]
    config = yaml.safe_load((exported / "config.yaml").read_text())  # saved with the logger off
    assert config["model"]["init_args"]["encoder_checkpoint"].endswith("last.ckpt")


@pytest.mark.slow
def test_exported_embeddings_and_frames_equal_a_direct_computation(exported, pretrained, tiny_data):
    out, frames = np.load(exported / "embeddings.npz"), np.load(exported / "frames.npz")
    encoder, stats = load_pretrained(pretrained / "pretrain" / "checkpoints" / "last.ckpt")
    normalizer = Standardize(96)
    normalizer.load_state_dict(stats)
    encoder.eval()
    rows = manifest_rows(tiny_data)
    durations = [sf.info(str(tiny_data.parent / r["filename"])).duration for r in rows]
    i = int(np.argmax(durations))  # a clip with several windows, the last overlapping
    windows, starts, n_frames = clip_windows(tiny_data.parent / rows[i]["filename"])
    assert len(starts) >= 3 and starts[-1] < starts[-2] + PATCH
    with torch.no_grad():
        x = normalizer(windows)
        expected = encoder(x).mean(0).numpy()
    np.testing.assert_allclose(out["embeddings"][i], expected, rtol=1e-4, atol=1e-5)

    offsets, stamps = frames["offsets"], frames["timestamps"]
    assert offsets.shape == (len(rows) + 1,) and offsets[-1] == len(frames["frames"]) == len(stamps)
    # the frames lie on the HEAR API's grid (39.9 ms: 4 log-mel frames, a quarter of the encoder's stride)
    grid = TimestampGrid.finest(frame_stride(encoder, 96, PATCH)[0], PATCH, 50.0, 1000 * HOP_S)
    assert grid.hop == 4
    for c in range(len(rows)):
        t = stamps[offsets[c] : offsets[c + 1]]
        frames_c = clip_windows(tiny_data.parent / rows[c]["filename"])[2]
        assert len(t) == grid.count(frames_c - 1) >= 1
        np.testing.assert_allclose(t, (grid.first + grid.hop * np.arange(len(t))) * HOP_S, atol=1e-9)
        assert t[-1] < durations[c]
    assert offsets[i + 1] - offsets[i] == pytest.approx(n_frames / grid.hop, abs=1)


@pytest.mark.slow
def test_export_of_unlabelled_clips_of_one_split(pretrained, tiny_data, tmp_path):
    rows = manifest_rows(tiny_data)
    manifest = tmp_path / "unlabelled.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label", "split"])
        writer.writerows((tiny_data.parent / r["filename"], "", r["split"]) for r in rows)
    export(pretrained, manifest, tmp_path / "out", "--data.init_args.predict_split", "test")
    out = np.load(tmp_path / "out" / "embeddings.npz")
    test = [r for r in rows if r["split"] == "test"]
    assert out["embeddings"].shape == (len(test), 32)
    assert out["filenames"].tolist() == [str(tiny_data.parent / r["filename"]) for r in test]
    assert set(out["labels"].tolist()) == {""} and set(out["split"].tolist()) == {"test"}
    assert not (tmp_path / "out" / "frames.npz").exists()


@pytest.mark.slow
def test_hear_wrapper_agrees_with_export(exported, pretrained):
    """The same clip embeddings (same windows) and the same frame sequences on the same grid; only the
    cache's float16 log-mel differs (about 1e-3). The cache knows a clip's frames, not its samples, so
    HEAR may give one frame more at the end."""
    from ser_ssl import hear

    model = hear.load_model(str(pretrained / "pretrain" / "checkpoints" / "last.ckpt"))
    out, frames = np.load(exported / "embeddings.npz"), np.load(exported / "frames.npz")
    offsets = frames["offsets"]
    for i in (0, int(np.argmax(np.diff(offsets)))):
        audio = load_audio(out["paths"][i], model.sample_rate)[None]
        scene = hear.get_scene_embeddings(audio, model)[0].numpy()
        np.testing.assert_allclose(scene, out["embeddings"][i], atol=5e-3)
        seq, stamps = hear.get_timestamp_embeddings(audio, model)
        ours, our_stamps = (
            frames["frames"][offsets[i] : offsets[i + 1]],
            frames["timestamps"][offsets[i] : offsets[i + 1]],
        )
        assert 0 <= seq.shape[1] - len(ours) <= 1
        np.testing.assert_allclose(stamps[0, : len(ours)].numpy(), 1000 * our_stamps, rtol=1e-6)
        np.testing.assert_allclose(seq[0, : len(ours)].numpy(), ours, atol=5e-3)

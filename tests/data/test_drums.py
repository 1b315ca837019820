"""Tests of the drums-set builder on a fake source tree: no Debian package or fluidsynth is needed.

The tree mimics the real one: Hydrogen kits (with and without an XML namespace), Sonic Pi and LMMS
samples of several rates, channel counts and formats, and one fake soundfont whose "rendering" is
a function standing in for fluidsynth.
"""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_ssl.data import drums
from ser_ssl.errors import UserError

# name of a Hydrogen instrument of each class
INSTRUMENTS = {
    "kick": "Kick",
    "snare": "Snare",
    "hihat_closed": "Closed HH",
    "hihat_open": "Hi-Hat Semiopen",
    "crash": "Crash",
    "ride": "Ride Bell",
    "tom": "Tom Hi",
    "clap": "Hand Clap",
    "rim": "Stick",
    "cowbell": "Cowbell",
}
KITS = [f"Kit{c}" for c in "ABCDEF"]
# (rate, channels) of each kit; one kit needs resampling from 48 kHz, which is the slow part
FORMATS = [(44100, 2), (48000, 1), (22050, 1), (44100, 1), (22050, 2), (44100, 2)]
SILENT_KEY = 56  # the fake soundfont has no cowbell: those hits must be dropped as silent
GM_PROGRAMS = {0: "standard", 25: "tr808"}
GM_VELOCITIES = (100,)


def _burst(seed: int, sr: int, seconds: float, channels: int) -> np.ndarray:
    """A decaying noise burst, different for every seed."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    x = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.05 * sr)) * 0.5
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def _write_kit(root: Path, k: int, kit: str) -> None:
    """One Hydrogen kit: every class, each with its own sample file, plus the oddities per kit."""
    folder = root / kit
    folder.mkdir(parents=True)
    sr, channels = FORMATS[k % len(FORMATS)]
    instruments: list[tuple[str, list[str]]] = []
    for c, (label, name) in enumerate(INSTRUMENTS.items()):
        layers = 14 if (kit == "KitA" and label == "kick") else 1  # KitA: more layers than the cap
        files = []
        for layer in range(layers):
            fn = f"{label}_{layer}.wav"
            seconds = 2.5 if (kit == "KitD" and label == "crash") else 0.3  # longer than a clip
            audio = _burst(1000 * k + 20 * c + layer, sr, seconds, channels)
            if kit == "KitB" and label == "crash":
                audio *= 0.0  # silent: dropped
            sf.write(folder / fn, audio, sr, subtype="PCM_16")
            files.append(fn)
        instruments.append((name, files))
    if kit == "KitB":
        instruments.append(("Snare 2", ["snare_0.wav"]))  # one file under two instruments: taken once
    if kit == "KitC":
        (folder / "ride_0.wav").write_bytes(b"not a wav file")  # unreadable: dropped
    if kit == "KitF":
        # KitF shares KitE's snare sample (a copy): the two kits must become one group
        (folder / "snare_0.wav").write_bytes((root / "KitE" / "snare_0.wav").read_bytes())
    sf.write(folder / "conga.wav", _burst(1000 * k + 999, sr, 0.3, channels), sr)
    instruments.append(("Conga", ["conga.wav"]))  # no class: ignored
    instruments.append(("Tom Low", ["missing.wav"]))  # file not there: ignored
    namespaced = k % 2 == 0  # newer kits declare a namespace and put files in <layer>
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    lines.append(
        '<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit">' if namespaced else "<drumkit_info>"
    )
    lines.append(f"<name>{kit}</name><instrumentList>")
    for i, (name, files) in enumerate(instruments):
        lines.append(f"<instrument><id>{i}</id><name>{name}</name>")
        for fn in files:
            lines.append(
                f"<layer><filename>{fn}</filename></layer>" if namespaced else f"<filename>{fn}</filename>"
            )
        lines.append("</instrument>")
    lines.append("</instrumentList></drumkit_info>")
    (folder / "drumkit.xml").write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A fake source tree; returns the keyword arguments of :func:`drums.build` that point at it."""
    root = tmp_path_factory.mktemp("sources")
    hydrogen, sonic_pi, lmms = root / "drumkits", root / "sonic-pi", root / "lmms"
    for k, kit in enumerate(KITS):
        _write_kit(hydrogen, k, kit)
    sonic_pi.mkdir()
    for i, stem in enumerate(
        ["bd_fat", "sn_dub", "hat_zap", "drum_cowbell", "drum_tom_hi_hard", "ambi_choir"]
    ):
        sf.write(sonic_pi / f"{stem}.flac", _burst(50_000 + i, 44100, 0.3, 2), 44100, format="FLAC")
    lmms.mkdir()
    for i, stem in enumerate(["kick01", "clap01", "ride01", "shaker01"]):
        sf.write(
            lmms / f"{stem}.ogg", _burst(60_000 + i, 44100, 0.3, 1), 44100, format="OGG", subtype="VORBIS"
        )
    soundfont = root / "fake.sf2"
    soundfont.write_bytes(b"RIFF")
    return {"hydrogen": hydrogen, "sonic_pi": sonic_pi, "lmms": lmms, "soundfonts": {"fake": soundfont}}


def fake_render(calls: list | None = None):
    """A stand-in for fluidsynth: one burst per hit at its slot, the same burst for every velocity."""
    slot = round(drums.SLOT_SECONDS * drums.SAMPLE_RATE)

    def render(soundfont: Path, program: int, hits) -> np.ndarray:
        if calls is not None:
            calls.append((soundfont.name, program, list(hits)))
        out = np.zeros(len(hits) * slot, np.float32)
        for i, (key, velocity) in enumerate(hits):
            if key != SILENT_KEY:
                burst = _burst(70_000 + 1000 * program + key, drums.SAMPLE_RATE, 1.0, 1)[:, 0]
                out[i * slot : i * slot + len(burst)] = burst * velocity / 127
        return out

    return render


@pytest.fixture
def few_gm_kits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Render two GM kits at one velocity instead of seven at four: fewer clips, the same code."""
    monkeypatch.setattr(drums, "GM_KITS", GM_PROGRAMS)
    monkeypatch.setattr(drums, "VELOCITIES", GM_VELOCITIES)


def _build(out: Path, sources: dict, calls: list | None = None, **kwargs) -> Path:
    return drums.build(out, render=fake_render(calls), log=lambda _: None, **sources, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, sources: dict) -> tuple[Path, list]:
    """One build shared by the read-only tests: (manifest, fluidsynth stand-in calls)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(drums, "GM_KITS", GM_PROGRAMS)
        mp.setattr(drums, "VELOCITIES", GM_VELOCITIES)
        calls: list = []
        return _build(tmp_path_factory.mktemp("out"), sources, calls), calls


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tree(root: Path) -> dict[str, str]:
    """Every file under root by relative path, with a hash of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_audio_format(built: tuple[Path, list]) -> None:
    manifest, _ = built
    root = manifest.parent
    assert manifest == root.parent / "drums" / "manifest.csv"
    with manifest.open(newline="", encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == ["filename", "label", "split", "group"]
    rows = _rows(manifest)
    assert {p for p in _tree(root) if p != "manifest.csv"} == {r["filename"] for r in rows}
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no staging left
    assert set(os.listdir(root.parent)) == {"drums"}  # no partial build beside it
    (root.parent / "plain").mkdir()
    assert root.stat().st_mode == (root.parent / "plain").stat().st_mode  # readable as any new folder
    (root.parent / "plain").rmdir()
    for r in rows:
        split, label, name = r["filename"].split("/")
        assert (split, label) == (r["split"], r["label"]) and name.startswith(label) and name.endswith(".wav")
        info = sf.info(str(root / r["filename"]))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (22050, 1, "PCM_16", 33075)
    assert {r["label"] for r in rows} == set(drums.CLASSES)
    for split in ("train", "test"):
        assert {r["label"] for r in rows if r["split"] == split} == set(drums.CLASSES), split


def test_clips_are_normalised_and_not_silent(built: tuple[Path, list]) -> None:
    manifest, _ = built
    for r in _rows(manifest)[::7]:
        x, _ = sf.read(str(manifest.parent / r["filename"]), dtype="float32")
        assert abs(np.abs(x).max() - drums.PEAK) < 1e-3
        assert np.abs(x[-10:]).max() < 1e-3  # faded out at the cut


def test_split_is_by_kit_and_shared_samples_merge_kits(built: tuple[Path, list]) -> None:
    rows = _rows(built[0])
    splits: dict[str, set[str]] = {}
    for r in rows:
        splits.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values()), {g: s for g, s in splits.items() if len(s) > 1}
    groups = set(splits)
    # KitE and KitF share a sample, so they are one group; every other kit, family and font is its own
    assert groups == {f"hydrogen:Kit{c}" for c in "ABCD"} | {
        "hydrogen:KitE+hydrogen:KitF",
        "sonicpi:bd",
        "sonicpi:sn",
        "sonicpi:hat",
        "sonicpi:drum",
        "lmms",
        "gm:fake",
    }
    test_groups = {g for g, s in splits.items() if s == {"test"}}
    assert len(test_groups) == round(drums.TEST_FRACTION * len(groups))
    share = sum(r["split"] == "test" for r in rows) / len(rows)
    assert drums.TEST_CLIP_SHARE[0] <= share <= drums.TEST_CLIP_SHARE[1]


def test_selection_of_samples(built: tuple[Path, list], few_gm_kits) -> None:
    manifest, calls = built
    n = Counter((r["group"], r["label"]) for r in _rows(manifest))
    assert n["hydrogen:KitA", "kick"] == drums.MAX_PER_INSTRUMENT  # 14 layers, capped
    assert n["hydrogen:KitB", "snare"] == 1  # one file under two instruments
    assert n["hydrogen:KitB", "crash"] == 0  # silent
    assert n["hydrogen:KitC", "ride"] == 0  # unreadable
    assert n["hydrogen:KitD", "crash"] == 1  # longer than a clip: cut
    assert n["hydrogen:KitE+hydrogen:KitF", "snare"] == 2
    assert {label for (g, label) in n if g == "lmms"} == {"kick", "clap", "ride"}  # shaker: no class
    assert {g for g, _ in n if g.startswith("sonicpi")} == {
        "sonicpi:bd",
        "sonicpi:sn",
        "sonicpi:hat",
        "sonicpi:drum",
    }
    # GM: every kit once, every key at every velocity; the silent key's hits are dropped
    hits, labels = drums.gm_hits()
    assert [(name, program) for name, program, _ in calls] == [("fake.sf2", p) for p in sorted(GM_PROGRAMS)]
    assert all(h == hits for _, _, h in calls)
    per_kit = Counter(label for (key, _), label in zip(hits, labels, strict=True) if key != SILENT_KEY)
    gm = Counter({label: count for (g, label), count in n.items() if g == "gm:fake"})
    assert gm == Counter({label: count * len(GM_PROGRAMS) for label, count in per_kit.items()})
    assert "cowbell" not in gm


def test_two_builds_are_identical(
    tmp_path: Path, sources: dict, built: tuple[Path, list], few_gm_kits
) -> None:
    again = _build(tmp_path / "again", sources)
    assert again.read_bytes() == built[0].read_bytes()
    assert _tree(again.parent) == _tree(built[0].parent)


def test_existing_set_is_kept_and_force_rebuilds(tmp_path: Path, sources: dict, few_gm_kits) -> None:
    small = {**sources, "soundfonts": {}}  # no GM kits: faster, and no renderer needed
    manifest = _build(tmp_path, small)
    stamp = manifest.stat().st_mtime_ns
    calls: list = []
    assert _build(tmp_path, sources, calls) == manifest  # kept: nothing rendered or rewritten
    assert calls == [] and manifest.stat().st_mtime_ns == stamp
    _build(tmp_path, sources, calls, force=True)
    assert len(calls) == len(GM_PROGRAMS)
    assert any(r["group"] == "gm:fake" for r in _rows(manifest))


def test_interrupted_build_leaves_the_old_set(tmp_path: Path, sources: dict, few_gm_kits) -> None:
    small = {**sources, "soundfonts": {}}
    manifest = _build(tmp_path, small)
    before = _tree(manifest.parent)

    def broken(soundfont: Path, program: int, hits) -> np.ndarray:
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C while fluidsynth ran

    with pytest.raises(KeyboardInterrupt):
        drums.build(tmp_path, force=True, render=broken, log=lambda _: None, **sources)
    assert _tree(manifest.parent) == before
    assert sorted(os.listdir(tmp_path)) == ["drums"]  # the partial build was removed


def test_first_interrupted_build_leaves_no_set(tmp_path: Path, sources: dict) -> None:
    def broken(soundfont: Path, program: int, hits) -> np.ndarray:
        raise RuntimeError("fluidsynth failed")

    with pytest.raises(RuntimeError):
        drums.build(tmp_path, render=broken, log=lambda _: None, **sources)
    assert not (tmp_path / "drums").exists()
    # a partial build left by a killed process is not taken for a set, and is cleaned up
    (tmp_path / ".drums.abc.partial" / "train").mkdir(parents=True)
    manifest = _build(tmp_path, {**sources, "soundfonts": {}})
    assert manifest.is_file() and sorted(os.listdir(tmp_path)) == ["drums"]


def test_missing_sources_give_one_clear_error(
    tmp_path: Path, sources: dict, monkeypatch: pytest.MonkeyPatch, few_gm_kits
) -> None:
    absent = {
        "hydrogen": tmp_path / "no-hydrogen",
        "sonic_pi": tmp_path / "no-sonic-pi",
        "lmms": tmp_path / "no-lmms",
        "soundfonts": {"fluidr3": tmp_path / "FluidR3_GM.sf2"},
    }
    with pytest.raises(drums.MissingSourcesError) as err:
        drums.build(tmp_path / "out", log=lambda _: None, **absent)
    message = str(err.value)
    assert "\n" not in message and "--install" in message
    for package in drums.PACKAGES:
        assert package in message
    for path in absent["hydrogen"], absent["sonic_pi"], absent["lmms"], absent["soundfonts"]["fluidr3"]:
        assert str(path) in message
    assert not (tmp_path / "out").exists()  # nothing written
    # the sample folders present but no fluidsynth command: that alone is reported
    monkeypatch.setattr(drums.shutil, "which", lambda name: None)
    with pytest.raises(drums.MissingSourcesError, match="fluidsynth command"):
        drums.build(tmp_path / "out", log=lambda _: None, **sources)  # the default renderer needs it
    _build(tmp_path / "out", sources)  # a given renderer does not


def test_command_line_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # as on a machine without the packages, whatever this one has installed
    monkeypatch.setattr(drums, "missing_sources", lambda *args, **kwargs: ["/usr/share/sonic-pi/samples (x)"])
    with pytest.raises(SystemExit) as exit_:
        drums.main(["--out", str(tmp_path)])
    message = str(exit_.value.code)
    assert message.startswith("python -m ser_ssl.data.drums: error: ") and "\n" not in message
    assert "--install" in message and "sonic-pi-samples" in message


def test_help_names_the_packages_and_the_install_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        drums.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--install" in text and "apt-get" in text and "root" in text
    for package in drums.PACKAGES:
        assert package in text


class FakeApt:
    """Records the commands run; dpkg-query answers 'installed' for the packages in ``installed``."""

    def __init__(self, installed: set[str]) -> None:
        self.installed, self.commands, self.envs = installed, [], []

    def __call__(self, command: list[str], **kwargs) -> subprocess.CompletedProcess:
        if command[0] == "dpkg-query":
            ok = command[-1] in self.installed
            return subprocess.CompletedProcess(command, 0 if ok else 1, "installed" if ok else "", "")
        self.commands.append(command)
        self.envs.append(kwargs.get("env", {}))
        return subprocess.CompletedProcess(command, 0, "", "")


def _fake_debian(monkeypatch: pytest.MonkeyPatch, installed: set[str], uid: int = 0) -> FakeApt:
    apt = FakeApt(installed)
    monkeypatch.setattr(drums.subprocess, "run", apt)
    monkeypatch.setattr(drums.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(drums.os, "geteuid", lambda: uid)
    return apt


def test_install_runs_apt_get_only_for_missing_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    apt = _fake_debian(monkeypatch, installed=set(drums.PACKAGES) - {"fluidsynth", "lmms-common"})
    assert drums.install_packages() == ["fluidsynth", "lmms-common"]
    assert apt.commands[0][:2] == ["apt-get", "update"]
    assert apt.commands[1][:2] == ["apt-get", "install"] and apt.commands[1][-2:] == [
        "fluidsynth",
        "lmms-common",
    ]
    assert "-y" in apt.commands[1]
    assert all(env.get("DEBIAN_FRONTEND") == "noninteractive" for env in apt.envs)

    apt = _fake_debian(monkeypatch, installed=set(drums.PACKAGES))
    assert drums.install_packages() == [] and apt.commands == []


def test_install_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    apt = _fake_debian(monkeypatch, installed=set(), uid=1000)
    with pytest.raises(UserError, match="root"):
        drums.install_packages()
    assert apt.commands == []


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ('Kick (Tama Superstar 22")', "kick"),
        ("BassDrum", "kick"),
        ("drum_bass_hard", "kick"),
        ("bd_808", "kick"),
        ("bass_dnb_f", None),  # a synth bass, not a bass drum
        ("Snare Rimshot", "snare"),
        ("sn_dub", "snare"),
        ("Rim Click", "rim"),
        ("Pearl Side Stick", "rim"),
        ("Closed HH", "hihat_closed"),
        ("Hat Pedal", "hihat_closed"),
        ("drum_cymbal_closed", "hihat_closed"),
        ("hat_zap", "hihat_closed"),
        ("Open HH", "hihat_open"),
        ("Side OHH", "hihat_open"),
        ("VariBreaks Hat 1 Op", "hihat_open"),
        ("Hi-Hat Semiopen", "hihat_open"),
        ("hihat_opened01", "hihat_open"),
        ("Ride Bell", "ride"),
        ("Crash/Ride Bow", None),  # either class
        ("Zildjian Splash", "crash"),
        ('China (Paiste Alpha 18")', "crash"),
        ("tomhi2", "tom"),
        ("Floor Tom", "tom"),
        ("Hand Clap", "clap"),
        ("Cowbell", "cowbell"),
        ("perc_bell", None),
        ("Tambourine Pedal", None),
        ("Conga 1", None),
    ],
)
def test_classify(name: str, label: str | None) -> None:
    assert drums.classify(name) == label


def test_midi_file_structure() -> None:
    hits = [(36, 100), (38, 50), (42, 127)]
    data = drums.midi_file(25, hits)
    assert data[:4] == b"MThd" and data[14:18] == b"MTrk"
    assert int.from_bytes(data[18:22], "big") == len(data) - 22
    track = data[22:]
    assert track.count(bytes([0xC9, 25])) == 1  # program change on channel 10
    for key, velocity in hits:
        assert track.count(bytes([0x99, key, velocity])) == 1
        assert track.count(bytes([0x89, key, 0])) == 1
    assert track.endswith(b"\xff\x2f\x00")


def test_shared_groups_are_merged_transitively() -> None:
    rng = np.random.default_rng(0)
    a, b, d = (v / np.linalg.norm(v) for v in rng.standard_normal((3, 100)))
    groups = ["x", "y", "y", "z", "w"]
    prints = np.stack([a, a * 1.0, b, b, d])  # x-y share a, y-z share b, w alone
    merged = drums.merge_shared_groups(groups, prints)
    assert merged == {"x": "x+y+z", "y": "x+y+z", "z": "x+y+z", "w": "w"}


@pytest.mark.parametrize(("rate", "channels"), [(48000, 2), (44100, 1), (22050, 2)])
def test_load_clip_resamples_mixes_down_and_cuts(tmp_path: Path, rate: int, channels: int) -> None:
    t = np.arange(round(0.3 * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    path = tmp_path / "tone.wav"
    sf.write(path, np.stack([tone] * channels, axis=1), rate, subtype="FLOAT")
    clip = drums.load_clip(path)
    assert clip is not None and clip.dtype == np.float32 and clip.shape == (drums.CLIP_SAMPLES,)
    n = round(0.3 * drums.SAMPLE_RATE)
    assert abs(np.abs(clip[: n - 20]).max() - 0.5) < 0.02  # mono mix, level kept
    assert np.abs(clip[n + 20 :]).max() < 1e-3  # 0.3 s at the new rate, then zeros
    spectrum = np.abs(np.fft.rfft(clip[:n]))
    assert abs(np.argmax(spectrum) * drums.SAMPLE_RATE / n - 1000.0) < 10

    long = tmp_path / "long.wav"
    sf.write(long, np.ones((5 * rate, channels)) * 0.25, rate)
    clip = drums.load_clip(long)
    assert clip.shape == (drums.CLIP_SAMPLES,) and abs(clip[drums.CLIP_SAMPLES // 2] - 0.25) < 1e-3
    assert clip[-1] == 0.0  # faded out at the cut
    (tmp_path / "bad.wav").write_bytes(b"RIFF????WAVE")
    assert drums.load_clip(tmp_path / "bad.wav") is None

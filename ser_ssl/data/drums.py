"""Build a small real data set of drum one-shots from audio that Debian packages ship.

The built-in synthetic set (:mod:`ser_ssl.data.synthetic`) cannot show whether a representation
transfers to real recordings; this set can, and it needs no download beyond Debian packages. It
holds about 2,300 clips of 1.5 s (mono, 16-bit PCM WAV, 22,050 Hz, peak-normalised) in 10 classes:
kick, snare, hihat_closed, hihat_open, crash, ride, tom, clap, rim and cowbell, taken from

* the Hydrogen drum kits (``/usr/share/hydrogen/data/drumkits``; packages hydrogen-drumkits and
  hydrogen-data), one group per kit, labelled by instrument name;
* the Sonic Pi samples (``/usr/share/sonic-pi/samples``; sonic-pi-samples), one group per sample
  family (``bd_``, ``drum_``, ``elec_``, ``hat_``, ``perc_``, ``sn_``), labelled by file name;
* the LMMS drum samples (``/usr/share/lmms/samples/drums``; lmms-common), one group;
* the General MIDI drum kits (standard, room, power, electronic, TR-808, jazz, brush) of three
  soundfonts, FluidR3_GM.sf2 (fluid-soundfont-gm), TimGM6mb.sf2 (timgm6mb-soundfont) and
  MuseScore_General.sf3 (musescore-general-soundfont), each GM key played at four velocities and
  rendered dry with the ``fluidsynth`` command; one group per soundfont, because the kits of one
  soundfont share samples.

At most 12 clips are kept per group and class from the sample kits (velocity layers of one
instrument are near-duplicates), chosen by a seeded shuffle; unreadable and (nearly) silent clips
are dropped, and a file that one kit lists under two instruments is taken once. Groups that share
a sample (the same audio from the onset on, at any level) are merged into one group named
``a+b``: on Debian bookworm MuseScore_General's drums are FluidR3's, Hydrogen's GMRockKit and The
Black Pearl share most samples, and two Millo kits share a cowbell, so 23 groups become 20.

The split is by group, so no kit or soundfont has clips in both splits: 30 % of the groups (6 of
the 20) form the test split, drawn by a seeded shuffle; the first draw is taken that gives every
class to both splits and puts 20-35 % of the clips in the test split (one soundfont alone holds
~550 clips). Given the same installed packages the output is the same on every run.

Layout::

    <out>/drums/{train,test}/<class>/<class>_<index:04d>.wav
    <out>/drums/manifest.csv    filename,label,split,group (filename relative to <out>/drums)

The set is built in a hidden folder beside ``<out>/drums`` and renamed into place when complete,
so an interrupted build never looks like a finished one; an existing set is kept unless
``--force`` is given.

Licences: the audio keeps the licences of its sources, listed in
``/usr/share/doc/<package>/copyright`` for hydrogen-drumkits, hydrogen-data, sonic-pi-samples,
lmms-common, fluid-soundfont-gm, timgm6mb-soundfont and musescore-general-soundfont. Use the set for
checks, benchmarks and the results in docs/results.md; do not commit or redistribute it without them.

Usage::

    python -m ser_ssl.data.drums --install --out data/real   # as root: apt-get the missing packages
    python -m ser_ssl.data.drums --out data/real [--force]   # packages already installed

Nothing is downloaded except by ``apt-get`` when ``--install`` is given and a package is missing.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from ser_ssl.data.cache import one_thread
from ser_ssl.errors import UserError

__all__ = [
    "CLASSES",
    "PACKAGES",
    "SAMPLE_RATE",
    "MissingSourcesError",
    "build",
    "classify",
    "install_packages",
    "main",
    "missing_packages",
    "missing_sources",
]

SAMPLE_RATE = 22050
CLIP_SECONDS = 1.5
CLIP_SAMPLES = round(SAMPLE_RATE * CLIP_SECONDS)
CLASSES: tuple[str, ...] = (
    "kick",
    "snare",
    "hihat_closed",
    "hihat_open",
    "crash",
    "ride",
    "tom",
    "clap",
    "rim",
    "cowbell",
)
#: The Debian packages whose files the builder reads.
PACKAGES: tuple[str, ...] = (
    "fluidsynth",
    "fluid-soundfont-gm",
    "musescore-general-soundfont",
    "timgm6mb-soundfont",
    "hydrogen-drumkits",
    "hydrogen-data",
    "sonic-pi-samples",
    "lmms-common",
)

HYDROGEN = Path("/usr/share/hydrogen/data/drumkits")
SONIC_PI = Path("/usr/share/sonic-pi/samples")
LMMS = Path("/usr/share/lmms/samples/drums")
SOUNDFONTS: Mapping[str, Path] = {
    "fluidr3": Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    "timgm6mb": Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
    "musescore": Path("/usr/share/sounds/sf3/MuseScore_General.sf3"),
}
#: Which package provides each source, for the error message.
_SOURCE_PACKAGES = {
    "hydrogen": "hydrogen-drumkits, hydrogen-data",
    "sonic_pi": "sonic-pi-samples",
    "lmms": "lmms-common",
    "fluidr3": "fluid-soundfont-gm",
    "timgm6mb": "timgm6mb-soundfont",
    "musescore": "musescore-general-soundfont",
}
SONIC_PI_FAMILIES = ("bd", "drum", "elec", "hat", "perc", "sn")

#: GM percussion keys (channel 10) of each class.
GM_KEYS: Mapping[str, tuple[int, ...]] = {
    "kick": (35, 36),
    "snare": (38, 40),
    "hihat_closed": (42, 44),
    "hihat_open": (46,),
    "crash": (49, 57),
    "ride": (51, 59),
    "tom": (41, 43, 45, 47, 48, 50),
    "clap": (39,),
    "rim": (37,),
    "cowbell": (56,),
}
#: GM/GS drum-kit programs (bank 128) rendered from every soundfont.
GM_KITS: Mapping[int, str] = {
    0: "standard",
    8: "room",
    16: "power",
    24: "electronic",
    25: "tr808",
    32: "jazz",
    40: "brush",
}
VELOCITIES = (50, 80, 110, 127)
#: Seconds between two rendered hits: longer than a clip, so one hit never bleeds into the next clip.
SLOT_SECONDS = 2.0

MAX_PER_INSTRUMENT = 12
TEST_FRACTION = 0.3
TEST_CLIP_SHARE = (0.2, 0.35)
SEED = 2024
SILENCE_RMS = 1e-3
#: Two clips whose first FINGERPRINT_SECONDS from the onset have a cosine similarity above
#: SHARED_SIMILARITY are one sample; their groups are merged so it cannot sit in both splits.
FINGERPRINT_SECONDS = 0.5
SHARED_SIMILARITY = 0.95
PEAK = 10 ** (-3 / 20)  # -3 dBFS
FADE_SECONDS = 0.03

#: ``render(soundfont, program, hits)``: mono float audio at SAMPLE_RATE with hit ``i`` (key,
#: velocity) starting at ``i * SLOT_SECONDS``. The default runs fluidsynth; tests pass a fake.
Renderer = Callable[[Path, int, Sequence[tuple[int, int]]], np.ndarray]


class MissingSourcesError(UserError, FileNotFoundError):
    """The Debian packages the set is built from are not installed."""


# ---------------------------------------------------------------- labels


def _words(name: str) -> list[str]:
    """Lower-case words of an instrument or file name: splits camelCase, ``_``, ``-``, digits."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return re.sub(r"[^a-z]+", " ", spaced.lower()).split()


_HAT = re.compile(r"\b(hi ?hats?|hihats?|hh|hats?|chh|ohh|phh)\b")


def classify(name: str) -> str | None:
    """The class of an instrument or sample name, or ``None`` when it is none of the 10.

    Cymbals are tested before drums, so a "ride bell" is a ride (not a cowbell), a "pedal hat" a
    closed hi-hat while a "tambourine pedal" is nothing, and a semi-open hat is open. A combined
    "crash/ride" cymbal could be either class and is left out. A snare "rimshot" is a snare hit
    (head and rim at once); "rim" is the rim click or side stick, as GM key 37.
    """
    text = " ".join(_words(name))
    words = set(text.split())
    if "cowbell" in words or "cow bell" in text:
        return "cowbell"
    ride, crash = "ride" in words, bool(words & {"crash", "splash", "china"})
    if ride or crash:
        return None if ride and crash else "ride" if ride else "crash"
    if _HAT.search(text) or ("cymbal" in words and words & {"closed", "open", "pedal"}):
        # Sonic Pi calls its hi-hats drum_cymbal_closed/open/pedal
        if words & {"open", "opened", "op", "o", "ohh", "semiopen"}:
            return "hihat_open"
        return "hihat_closed"
    if words & {"clap", "claps", "handclap"}:
        return "clap"
    if words & {"rim", "sidestick", "stick", "sticks"} or "side stick" in text:
        return "rim"
    if words & {"kick", "kik", "bd", "bassdrum"} or "bass drum" in text or "drum bass" in text:
        return "kick"
    if words & {"snare", "sd", "sn", "rimshot"}:
        return "snare"
    if any(w.startswith("tom") for w in words):  # "tomhi2" in a Hydrogen kit
        return "tom"
    return None


# ---------------------------------------------------------------- sources


def _local(tag: str) -> str:
    """An XML tag without its namespace (newer Hydrogen kits declare one)."""
    return tag.rsplit("}", 1)[-1]


def hydrogen_samples(root: Path) -> Iterator[tuple[str, str, Path]]:
    """``(group, label, path)`` of every labelled sample of every Hydrogen kit under ``root``."""
    for xml in sorted(root.glob("*/drumkit.xml")):
        try:
            tree = ET.parse(xml)
        except ET.ParseError:
            continue  # a broken kit description: skip the kit rather than the whole build
        for inst in tree.getroot().iter():
            if _local(inst.tag) != "instrument":
                continue
            name = next((c.text or "" for c in inst if _local(c.tag) == "name"), "")
            label = classify(name)
            if label is None:
                continue
            for el in inst.iter():
                if _local(el.tag) == "filename" and el.text and el.text.strip():
                    path = xml.parent / el.text.strip()
                    if path.is_file():
                        yield f"hydrogen:{xml.parent.name}", label, path


def sonic_pi_samples(root: Path) -> Iterator[tuple[str, str, Path]]:
    """``(group, label, path)`` of the Sonic Pi drum and percussion samples, grouped by family."""
    for path in sorted(root.glob("*.flac")):
        family = path.stem.split("_", 1)[0]
        label = classify(path.stem) if family in SONIC_PI_FAMILIES else None
        if label is not None:
            yield f"sonicpi:{family}", label, path


def lmms_samples(root: Path) -> Iterator[tuple[str, str, Path]]:
    """``(group, label, path)`` of the LMMS drum samples (one group)."""
    for path in sorted(root.glob("*.ogg")):
        label = classify(path.stem)
        if label is not None:
            yield "lmms", label, path


def missing_sources(
    hydrogen: Path = HYDROGEN,
    sonic_pi: Path = SONIC_PI,
    lmms: Path = LMMS,
    soundfonts: Mapping[str, Path] = SOUNDFONTS,
    need_fluidsynth: bool = True,
) -> list[str]:
    """What the build needs but cannot find, each with the package that provides it."""
    missing = []
    for key, root, pattern in (
        ("hydrogen", hydrogen, "*/drumkit.xml"),
        ("sonic_pi", sonic_pi, "*.flac"),
        ("lmms", lmms, "*.ogg"),
    ):
        if not any(root.glob(pattern)):
            missing.append(f"{root} ({_SOURCE_PACKAGES[key]})")
    for name, path in soundfonts.items():
        if not path.is_file():
            missing.append(f"{path} ({_SOURCE_PACKAGES.get(name, 'a soundfont')})")
    if need_fluidsynth and soundfonts and shutil.which("fluidsynth") is None:
        missing.append("the fluidsynth command (fluidsynth)")
    return missing


def missing_packages(packages: Iterable[str] = PACKAGES) -> list[str]:
    """The packages of ``packages`` that dpkg does not list as installed."""
    missing = []
    for package in packages:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status}", package], capture_output=True, text=True
        )
        if status.returncode != 0 or status.stdout.strip() != "installed":
            missing.append(package)
    return missing


def install_packages(packages: Sequence[str] = PACKAGES) -> list[str]:
    """``apt-get install`` the packages that are not installed yet (as root); returns those installed.

    ``--no-install-recommends`` keeps out the GUI applications (hydrogen, qsynth) that the data
    packages recommend but the build does not use.
    """
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        raise UserError("--install needs a Debian-based system with apt-get; install the packages yourself")
    todo = missing_packages(packages)
    if not todo:
        return []
    if os.geteuid() != 0:
        raise UserError(f"--install needs root to run apt-get; as root run: apt-get install {' '.join(todo)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"drums: installing {' '.join(todo)} with apt-get", flush=True)
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *todo],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    except subprocess.CalledProcessError as err:
        raise UserError(f"apt-get failed (exit {err.returncode}) installing {' '.join(todo)}") from err
    return todo


# ---------------------------------------------------------------- audio


def _fit(x: np.ndarray) -> np.ndarray:
    """Cut or zero-pad to one clip, fading out the last few ms so a cut cymbal does not click."""
    clip = np.zeros(CLIP_SAMPLES, np.float32)
    n = min(len(x), CLIP_SAMPLES)
    clip[:n] = x[:n]
    fade = round(FADE_SECONDS * SAMPLE_RATE)
    clip[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return clip


@functools.lru_cache(maxsize=16)
def _resampler(rate: int) -> torchaudio.transforms.Resample:
    """A resampler from ``rate`` to SAMPLE_RATE; kept, because building its filter is the slow part."""
    return torchaudio.transforms.Resample(rate, SAMPLE_RATE)


def load_clip(path: Path) -> np.ndarray | None:
    """The first 1.5 s of a sample file as mono float32 at SAMPLE_RATE; ``None`` if unreadable.

    Only the frames a clip needs are read and resampled (long cymbal tails are cut anyway).
    """
    try:
        info = sf.info(str(path))
        frames = math.ceil(CLIP_SECONDS * info.samplerate) + 64  # margin for the resampling filter
        x, sr = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError):
        return None
    if len(x) == 0:
        return None
    mono = x.mean(axis=1)
    if sr != SAMPLE_RATE:
        with torch.no_grad():
            mono = _resampler(sr)(torch.from_numpy(np.ascontiguousarray(mono))).numpy()
    return _fit(mono)


def _audible(clip: np.ndarray) -> bool:
    """Whether a clip holds more than silence or a click."""
    return bool(np.sqrt(np.mean(np.square(clip, dtype=np.float64))) > SILENCE_RMS)


def _normalise(clip: np.ndarray) -> np.ndarray:
    """Peak-normalised to -3 dBFS: the sources' levels are arbitrary, not a cue of the class."""
    return (clip * (PEAK / float(np.abs(clip).max()))).astype(np.float32)


# ---------------------------------------------------------------- GM kits via fluidsynth


def _varlen(n: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = bytearray([n & 0x7F])
    while n > 0x7F:
        n >>= 7
        out.insert(0, 0x80 | (n & 0x7F))
    return bytes(out)


def midi_file(program: int, hits: Sequence[tuple[int, int]], channel: int = 9) -> bytes:
    """A one-track MIDI file: drum kit ``program`` on ``channel``, hit ``i`` at ``i * SLOT_SECONDS``.

    Channel 10 (index 9) is the GM percussion channel, which fluidsynth maps to bank 128, so a
    program change alone selects the kit.
    """
    ticks_per_beat, tempo_us = 480, 500_000  # 120 bpm: 960 ticks per second
    per_second = ticks_per_beat * 1_000_000 // tempo_us
    events: list[tuple[int, int, bytes]] = [
        (0, 0, b"\xff\x51\x03" + tempo_us.to_bytes(3, "big")),
        (0, 1, bytes([0xC0 | channel, program])),
    ]
    for i, (key, velocity) in enumerate(hits):
        on = round(i * SLOT_SECONDS * per_second)
        events.append((on, 3, bytes([0x90 | channel, key, velocity])))
        events.append((on + per_second // 4, 2, bytes([0x80 | channel, key, 0])))
    end = round(len(hits) * SLOT_SECONDS * per_second)
    events.append((end, 4, b"\xff\x2f\x00"))
    track, now = bytearray(), 0
    for tick, _, message in sorted(events):
        track += _varlen(tick - now) + message
        now = tick
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks_per_beat)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def render_fluidsynth(soundfont: Path, program: int, hits: Sequence[tuple[int, int]]) -> np.ndarray:
    """Render the hits with the ``fluidsynth`` command: dry (no reverb or chorus), float samples."""
    with tempfile.TemporaryDirectory(prefix="ser-ssl-drums-") as tmp:
        mid, wav = Path(tmp, "hits.mid"), Path(tmp, "hits.wav")
        mid.write_bytes(midi_file(program, hits))
        quiet = ["-n", "-i", "-q"]  # no MIDI input, no shell, no banner
        synth = ["-R", "0", "-C", "0", "-g", "0.8", "-r", str(SAMPLE_RATE)]  # dry, at the set's rate
        output = ["-T", "wav", "-O", "float", "-F", str(wav)]  # float: no clipping, no dither noise
        command = ["fluidsynth", *quiet, *synth, *output, str(soundfont), str(mid)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"fluidsynth failed on {soundfont}: {result.stderr.strip()}")
        x, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise RuntimeError(f"fluidsynth wrote {sr} Hz, not {SAMPLE_RATE} Hz")
    return x.mean(axis=1)


def gm_hits() -> tuple[list[tuple[int, int]], list[str]]:
    """The hits rendered from every kit, (key, velocity), and the class of each."""
    hits, labels = [], []
    for label, keys in GM_KEYS.items():
        for key in keys:
            for velocity in VELOCITIES:
                hits.append((key, velocity))
                labels.append(label)
    return hits, labels


# ---------------------------------------------------------------- building


@dataclass(frozen=True, eq=False)
class _Staged:
    """One clip written to the staging folder, before the split is known."""

    path: Path
    label: str
    group: str
    fingerprint: np.ndarray


def _fingerprint(clip: np.ndarray) -> np.ndarray:
    """The first FINGERPRINT_SECONDS from the onset at unit norm: equal for one sample at any level."""
    n = round(FINGERPRINT_SECONDS * SAMPLE_RATE)
    magnitude = np.abs(clip)
    onset = int(np.argmax(magnitude > 0.05 * magnitude.max()))
    out = np.zeros(n, np.float32)
    segment = clip[onset : onset + n]
    out[: len(segment)] = segment
    return out / max(float(np.linalg.norm(out)), 1e-12)


def merge_shared_groups(groups: Sequence[str], fingerprints: np.ndarray) -> dict[str, str]:
    """Map each group to its merged name: groups that share a sample become one group.

    Kits copy samples from each other (Hydrogen's GMRockKit and The Black Pearl share most of
    theirs, MuseScore_General's drums are FluidR3's); kept apart, one could land in training and
    the other in the test split. The merged name joins the members with ``+``.
    """
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    ids = np.array([index[g] for g in groups])
    parent = list(range(len(names)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    prints = torch.from_numpy(np.ascontiguousarray(fingerprints, dtype=np.float32))
    for start in range(0, len(groups), 1024):
        similar = (prints[start : start + 1024] @ prints.T).numpy() > SHARED_SIMILARITY
        similar &= ids[start : start + 1024, None] != ids[None, :]
        rows, cols = np.nonzero(similar)
        for a, b in {(int(ids[start + r]), int(ids[c])) for r, c in zip(rows, cols, strict=True)}:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[str]] = defaultdict(list)
    for g in names:
        members[root(index[g])].append(g)
    return {g: "+".join(members[root(index[g])]) for g in names}


def choose_test_groups(
    counts: Mapping[str, Counter[str]], seed: int = SEED, fraction: float = TEST_FRACTION
) -> list[str]:
    """The groups of the test split: ``fraction`` of the groups, by a seeded shuffle.

    Of the seeded draws the first is taken in which every class that occurs in two groups or more
    is in both splits and the test split holds ``TEST_CLIP_SHARE`` of the clips; one soundfont
    holds ~560 clips, so an unconstrained draw could leave half the set for testing.
    """
    groups = sorted(counts)
    if len(groups) < 2:
        raise UserError(f"the drum sources give {len(groups)} group(s); a kit split needs two or more")
    k = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    per_class: Counter[str] = Counter()
    for c in counts.values():
        per_class.update(set(c))
    shared = {label for label, n in per_class.items() if n >= 2}
    total = sum(sum(c.values()) for c in counts.values())
    rng = random.Random(seed)
    first: list[str] | None = None
    for _ in range(10_000):
        test = sorted(rng.sample(groups, k))
        first = first or test
        test_classes = set().union(*(counts[g] for g in test))
        train_classes = set().union(*(counts[g] for g in groups if g not in test))
        share = sum(sum(counts[g].values()) for g in test) / total
        if (
            shared <= test_classes
            and shared <= train_classes
            and TEST_CLIP_SHARE[0] <= share <= TEST_CLIP_SHARE[1]
        ):
            return test
    assert first is not None
    return first


def _stage_samples(
    candidates: Iterable[tuple[str, str, Path]], staging: Path, seed: int, log: Callable[[str], None]
) -> list[_Staged]:
    """Load, cap and stage the sample-kit clips: at most MAX_PER_INSTRUMENT per (group, class)."""
    pools: dict[tuple[str, str], list[Path]] = defaultdict(list)
    seen: set[tuple[str, Path]] = set()
    for group, label, path in candidates:
        if (group, path) not in seen:  # kits reuse one file for several instruments
            seen.add((group, path))
            pools[group, label].append(path)
    staged: list[_Staged] = []
    for (group, label), paths in sorted(pools.items()):
        random.Random(f"{seed}:{group}:{label}").shuffle(paths)
        kept = 0
        for path in paths:
            if kept == MAX_PER_INSTRUMENT:
                break
            clip = load_clip(path)
            if clip is not None and _audible(clip):
                staged.append(_write(staging, len(staged), clip, label, group))
                kept += 1
    log(f"drums: {len(staged)} clips from {len({s.group for s in staged})} sample kits")
    return staged


def _stage_soundfonts(
    soundfonts: Mapping[str, Path], render: Renderer, staging: Path, start: int, log: Callable[[str], None]
) -> list[_Staged]:
    """Render and stage the GM kits of every soundfont (one group per soundfont)."""
    hits, labels = gm_hits()
    slot = round(SLOT_SECONDS * SAMPLE_RATE)
    staged: list[_Staged] = []
    for name, path in sorted(soundfonts.items()):
        for program in sorted(GM_KITS):
            audio = np.asarray(render(path, program, hits), dtype=np.float32)
            for i, label in enumerate(labels):
                clip = _fit(audio[i * slot : i * slot + CLIP_SAMPLES])
                if _audible(clip):
                    staged.append(_write(staging, start + len(staged), clip, label, f"gm:{name}"))
        log(f"drums: rendered {len(GM_KITS)} GM kits of {path.name}")
    return staged


def _write(staging: Path, index: int, clip: np.ndarray, label: str, group: str) -> _Staged:
    """Write one clip to the staging folder (written once, renamed into its split later)."""
    path = staging / f"{index:06d}.wav"
    sf.write(str(path), _normalise(clip), SAMPLE_RATE, subtype="PCM_16")
    return _Staged(path, label, group, _fingerprint(clip))


def _publish(tmp: Path, final: Path) -> None:
    """Swap the finished build into place; an old set is moved aside first, then deleted."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old)


def build(
    out: str | Path = "data/real",
    *,
    force: bool = False,
    hydrogen: Path = HYDROGEN,
    sonic_pi: Path = SONIC_PI,
    lmms: Path = LMMS,
    soundfonts: Mapping[str, Path] = SOUNDFONTS,
    render: Renderer = render_fluidsynth,
    seed: int = SEED,
    log: Callable[[str], None] = print,
) -> Path:
    """Build ``<out>/drums`` and return its manifest; an existing set is kept unless ``force``.

    The source roots are parameters so that tests can build from a fake tree; ``render`` replaces
    fluidsynth, and ``soundfonts={}`` leaves the GM kits out.
    """
    out = Path(out)
    final = out / "drums"
    manifest = final / "manifest.csv"
    if manifest.is_file() and not force:
        log(f"drums: {manifest} exists, kept (--force rebuilds it)")
        return manifest
    missing = missing_sources(hydrogen, sonic_pi, lmms, soundfonts, render is render_fluidsynth)
    if missing:
        raise MissingSourcesError(
            f"drum sources not installed: {'; '.join(missing)}. Rerun as root with --install to "
            f"apt-get the Debian packages ({' '.join(PACKAGES)})"
        )
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(".drums.*.partial"), *out.glob(".drums.old-*")]:  # left by a killed build
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out / f".drums.{os.getpid()}.partial"  # mkdir, not mkdtemp: the set gets the umask's mode
    tmp.mkdir()
    try:
        staging = tmp / ".staging"
        staging.mkdir()
        candidates = [*hydrogen_samples(hydrogen), *sonic_pi_samples(sonic_pi), *lmms_samples(lmms)]
        with one_thread():
            staged = _stage_samples(candidates, staging, seed, log)
        staged += _stage_soundfonts(soundfonts, render, staging, len(staged), log)
        if not staged:
            raise UserError("the drum sources gave no clips; check the source folders")
        merged = merge_shared_groups([s.group for s in staged], np.stack([s.fingerprint for s in staged]))
        for name in sorted({m for g, m in merged.items() if m != g}):
            log(f"drums: groups that share samples merged into {name}")
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for s in staged:
            counts[merged[s.group]][s.label] += 1
        test = set(choose_test_groups(counts, seed))
        rows = []
        numbers: Counter[tuple[str, str]] = Counter()
        for s in staged:  # staging order is sorted by group and class, so numbering is stable
            group = merged[s.group]
            split = "test" if group in test else "train"
            rel = f"{split}/{s.label}/{s.label}_{numbers[split, s.label]:04d}.wav"
            numbers[split, s.label] += 1
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            s.path.rename(tmp / rel)
            rows.append((rel, s.label, split, group))
        staging.rmdir()
        with (tmp / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["filename", "label", "split", "group"])
            writer.writerows(rows)
        _publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(_summary(rows, sorted(test)))
    return manifest


def _summary(rows: Sequence[tuple[str, str, str, str]], test: Sequence[str]) -> str:
    """Clips per class and split, and the test groups."""
    n = Counter((label, split) for _, label, split, _ in rows)
    lines = [f"drums: {len(rows)} clips, {len({r[1] for r in rows})} classes; test groups: {', '.join(test)}"]
    lines += [f"  {'class':14s} {'train':>5s} {'test':>5s}"]
    for label in CLASSES:
        if n[label, "train"] or n[label, "test"]:
            lines.append(f"  {label:14s} {n[label, 'train']:5d} {n[label, 'test']:5d}")
    train = sum(v for (_, split), v in n.items() if split == "train")
    lines.append(f"  {'total':14s} {train:5d} {len(rows) - train:5d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m ser_ssl.data.drums [--install] [--out data/real] [--force]``."""
    description = (
        "Build the data set <out>/drums: ~2,300 drum one-shots in 10 classes, split by kit, from the "
        "audio of these Debian packages: " + " ".join(PACKAGES) + ". Missing packages are an error "
        "unless --install is given; nothing is downloaded otherwise."
    )
    parser = argparse.ArgumentParser(
        prog="python -m ser_ssl.data.drums",
        description=textwrap.fill(description, 100, break_on_hyphens=False),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="data/real", help="folder to write drums/ into (default: data/real)")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if <out>/drums/manifest.csv exists"
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="first install the missing Debian packages with apt-get update + apt-get install "
        "(needs root and network; does nothing when all are installed)",
    )
    args = parser.parse_args(argv)
    try:
        if args.install and (args.force or not Path(args.out, "drums", "manifest.csv").is_file()):
            install_packages()
        build(args.out, force=args.force)
    except UserError as err:
        sys.exit(f"{parser.prog}: error: {err}")


if __name__ == "__main__":
    main()

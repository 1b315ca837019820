"""A deterministic, labelled synthetic sound-event data set written as WAV files.

This is the project's built-in default data: the demo and the tests use it when no real data set
is at hand, so it has to be small, fast to build, reproducible byte for byte, and still a real
learning problem. A representation should have to pick up *temporal* structure, so the classes
come in groups that share one frequency range and differ only in how the sound evolves in time:

* ``tone`` / ``tremolo`` / ``vibrato``: one harmonic tone, steady, amplitude- or
  frequency-modulated;
* ``chirp_up`` / ``chirp_down``: the same harmonic sweeps, in opposite directions;
* ``knock`` / ``click_train``: the same resonant impulses, once or repeated at a regular rate;
* ``noise_burst`` / ``noise_steady`` / ``rain``: the same band-pass noise as one decaying burst,
  sustained, or as random short bursts;
* ``pluck`` / ``bell``: a decaying harmonic tone and long-ringing, beating inharmonic partials.

The groups' ranges are staggered one-octave bands between 140 Hz and 2 kHz; harmonics, noise
bandwidths and the background spread every class over most of the spectrum, so the ranges overlap
heavily. Every clip also varies in pitch or band, duration, envelope, timbre, onset, loudness,
background noise colour and signal-to-noise ratio, and sample rate. As a result the clip-level
average spectrum is a weak cue (a linear classifier on time-averaged log-mel spectra reaches about
0.5 balanced accuracy over 12 classes; ``tests/data/test_synthetic.py`` checks it stays low),
while a small CNN on ~1 s log-mel patches reaches about 0.9.

Layout written under ``root``::

    root/<split>/<class>/<class>_<split>_<index:04d>.wav   (16-bit PCM, mono)
    root/synthetic.json                                     (generation arguments)
    root/manifest.csv                                       (filename,label,split,group; written last)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from ser_ssl.data.manifest import Clip, read_manifest
from ser_ssl.data.sources import DataSource
from ser_ssl.files import atomic_write_text

__all__ = ["CLASSES", "SAMPLE_RATES", "SPLITS", "VERSION", "SyntheticSource", "generate", "main"]

#: Bumped whenever the synthesis changes, so that cached sets are rebuilt.
VERSION = "2"
SPLITS: tuple[str, ...] = ("train", "val", "test")
SAMPLE_RATES: tuple[int, ...] = (16000, 22050, 44100, 48000)
#: Upper limit for event content: below the Nyquist frequency of the lowest sample rate, so the
#: classes look the same at every rate.
MAX_FREQ = 7000.0
MANIFEST = "manifest.csv"
META = "synthetic.json"

Rng = np.random.Generator


# --------------------------------------------------------------------------------------------
# Building blocks (all vectorised over samples)
# --------------------------------------------------------------------------------------------


def _loguniform(rng: Rng, lo: float, hi: float) -> float:
    """Log-uniform draw: pitches and bands vary evenly per octave, as hearing does."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _ramp_envelope(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    """A flat envelope with raised-cosine attack and release (avoids clicks at the edges)."""
    env = np.ones(n)
    a = min(n // 2, max(1, int(attack * sr)))
    r = min(n // 2, max(1, int(release * sr)))
    env[:a] = 0.5 - 0.5 * np.cos(np.pi * np.arange(a) / a)
    env[n - r :] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(r) / r)
    return env


def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n: FFT sizes that pocketfft handles quickly."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _lowpass_gain(freqs: np.ndarray) -> np.ndarray:
    """Smooth roll-off above MAX_FREQ, so noise classes keep the same band at every rate."""
    r = np.square(np.square(np.square(freqs / MAX_FREQ)))
    return 1.0 / (1.0 + r)


def _shaped_noise(rng: Rng, n: int, sr: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Gaussian noise with magnitude response ``gain(freq)``, zero mean and unit RMS.

    The noise is drawn directly as a random spectrum of a fast FFT size and cut to ``n``
    samples, which is statistically the same as filtering white noise but much cheaper.
    """
    m = _fast_len(n)
    freqs = np.arange(m // 2 + 1, dtype=np.float32) * np.float32(sr / m)
    re, im = rng.standard_normal((2, len(freqs)), dtype=np.float32)
    g = gain(freqs).astype(np.float32)
    g[0] = 0.0
    spec = np.empty(len(freqs), dtype=np.complex64)
    spec.real = re * g
    spec.imag = im * g
    y = np.fft.irfft(spec, n=m)[:n]
    y -= y.mean()
    return y / (np.sqrt(np.mean(np.square(y, dtype=np.float64))) + 1e-12)


def _band_noise(rng: Rng, n: int, sr: int, centre: float, octaves: float) -> np.ndarray:
    """Noise shaped by a Gaussian band in log frequency (FWHM ``octaves``), unit RMS."""
    sigma = octaves / 2.355

    def gain(f: np.ndarray) -> np.ndarray:
        lf = np.log2(np.maximum(f, 1.0) / centre)
        return np.exp(-0.5 * (lf / sigma) ** 2) * _lowpass_gain(f)

    return _shaped_noise(rng, n, sr, gain)


def _coloured_noise(rng: Rng, n: int, sr: int, colour: str) -> np.ndarray:
    """White, pink (1/f power) or brown (1/f^2 power) background noise of unit RMS."""
    if colour == "white":
        y = rng.standard_normal(n, dtype=np.float32)
        return y / (np.sqrt(np.mean(np.square(y, dtype=np.float64))) + 1e-12)
    if colour == "pink":
        return _shaped_noise(rng, n, sr, lambda f: 1.0 / np.sqrt(np.maximum(f, 20.0)))
    return _shaped_noise(rng, n, sr, lambda f: 1.0 / np.maximum(f, 20.0))


def _convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution via FFT, truncated to ``len(x)`` (used to place events on a train)."""
    m = len(x) + len(h) - 1
    size = 1 << (m - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]


def _harmonic_timbre(rng: Rng, f_top: float) -> tuple[np.ndarray, np.ndarray]:
    """Random weights and phases of harmonics 1..K, keeping every partial below MAX_FREQ.

    ``f_top`` is the highest fundamental the source reaches. Timbre varies in the number of
    harmonics, the spectral roll-off, per-harmonic jitter and sometimes missing even harmonics.
    """
    k_max = max(1, min(int(rng.integers(1, MAX_HARMONICS + 1)), int(MAX_FREQ // f_top)))
    k = np.arange(1, k_max + 1, dtype=float)
    w = k ** -rng.uniform(0.3, 2.2) * rng.uniform(0.4, 1.0, k_max)
    if k_max > 2 and rng.random() < 0.3:  # clarinet-like: odd harmonics only
        w[1::2] *= 0.05
    return w, rng.uniform(0, 2 * np.pi, k_max)


def _harmonic(
    phase: np.ndarray, w: np.ndarray, ph: np.ndarray, damping: np.ndarray | float = 0.0
) -> np.ndarray:
    """Sum over harmonics k = 1..K of ``w_k exp(-k * damping) sin(k * phase + ph_k)``.

    Evaluated by Horner's rule on ``z = exp(i * phase - damping)``: one complex exponential per
    sample instead of one sine per harmonic. ``damping`` (per sample) lets higher harmonics
    decay faster, as in a plucked string.
    """
    theta = np.mod(phase, 2 * np.pi).astype(np.float32)
    z = np.empty(theta.shape, dtype=np.complex64)
    z.real = np.cos(theta)
    z.imag = np.sin(theta)
    if np.any(damping):
        z *= np.exp(-np.asarray(damping, dtype=np.float32))
    coef = (w * np.exp(1j * ph)).astype(np.complex64)
    acc = np.full(z.shape, coef[-1], dtype=np.complex64)
    for c in coef[-2::-1]:
        acc *= z
        acc += c
    acc *= z
    return acc.imag


def _phase(freq: np.ndarray, sr: int) -> np.ndarray:
    """Instantaneous phase (radians) of a frequency track in Hz."""
    return 2 * np.pi * np.cumsum(freq) / sr


def _damped_sinusoids(
    m: int, sr: int, freqs: np.ndarray, taus: np.ndarray, amps: np.ndarray, phases: np.ndarray
) -> np.ndarray:
    """``sum_p amps_p exp(-t / taus_p) sin(2 pi freqs_p t + phases_p)`` for ``m`` samples.

    Each partial is a geometric sequence ``c_p z_p^t``; writing ``t = b B + j`` splits it into
    block starts times in-block powers, so the whole sum is one small complex matrix product
    instead of a sine and an exponential per partial and sample.
    """
    block = max(1, int(np.ceil(np.sqrt(m))))
    s = (-1.0 / taus + 2j * np.pi * freqs) / sr  # per-sample log-increment of each partial
    inner = np.exp(np.outer(s, np.arange(block)))  # [P, B]
    starts = np.exp(np.outer(np.arange(-(-m // block)) * block, s))  # [nb, P]
    coef = amps * np.exp(1j * phases)
    return ((starts * coef) @ inner).ravel()[:m].imag


def _resonant_click(rng: Rng, sr: int, f_res: float, tau: float) -> np.ndarray:
    """Impulse response of 1-3 damped modes plus a short noise transient: a knock or a click."""
    n_modes = int(rng.integers(1, 4))
    ratios = np.concatenate([[1.0], rng.uniform(1.3, 3.0, n_modes - 1)])
    freqs = np.minimum(f_res * ratios, MAX_FREQ)
    taus = tau * np.concatenate([[1.0], rng.uniform(0.3, 0.9, n_modes - 1)])
    amps = np.concatenate([[1.0], rng.uniform(0.2, 0.8, n_modes - 1)])
    n = max(8, int(6 * tau * sr))
    ir = _damped_sinusoids(n, sr, freqs, taus, amps, np.zeros(n_modes))
    trans = max(4, int(rng.uniform(0.0005, 0.003) * sr))
    ir[:trans] += rng.uniform(0.0, 0.5) * rng.standard_normal(trans) * np.exp(-np.arange(trans) / (trans / 3))
    return ir / (np.abs(ir).max() + 1e-12)


# --------------------------------------------------------------------------------------------
# Classes. Each returns the event waveform (any length <= n) for a clip of n samples; sustained
# classes are told ``sustain`` (the drawn event length), decaying classes choose their own.
# Shared ranges below make the time-averaged spectra of each family overlap.
# --------------------------------------------------------------------------------------------

#: Log-uniform frequency ranges (Hz), one octave each: fundamentals of the tone group and of the
#: plucks and bells, centres of the chirps, centres of the noise bands, resonances of the clicks.
#: Wider ranges make the average spectrum even less informative, but the 1-octave ranges keep
#: the groups partly apart, so that the set is hard for averaged spectra without being hopeless.
RANGES: dict[str, tuple[float, float]] = {
    "tone": (140.0, 280.0),
    "pluck": (200.0, 400.0),
    "bell": (400.0, 800.0),
    "chirp": (250.0, 500.0),
    "noise": (500.0, 1000.0),
    "click": (1000.0, 2000.0),
}
BAND_OCTAVES = (0.5, 3.0)  # noise bandwidths
SNR_DB = (0.0, 30.0)  # event (active part) to background power ratio
SUSTAIN_FRACTION = (0.5, 1.0)  # share of the clip a sustained event lasts
MAX_HARMONICS = 16


def _freq(rng: Rng, family: str) -> float:
    return _loguniform(rng, *RANGES[family])


def _sustained_env(rng: Rng, n: int, sr: int) -> np.ndarray:
    return _ramp_envelope(n, sr, rng.uniform(0.005, 0.15), rng.uniform(0.01, 0.3))


def _tone(rng: Rng, sr: int, n: int, sustain: int) -> np.ndarray:
    """Steady harmonic tone with a slight random drift (<0.3 %)."""
    f0 = _freq(rng, "tone")
    w, ph = _harmonic_timbre(rng, f0 * 1.003)
    drift = 1 + 0.003 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * np.arange(sustain) / sr)
    return _harmonic(_phase(f0 * drift, sr), w, ph) * _sustained_env(rng, sustain, sr)


def _tremolo(rng: Rng, sr: int, n: int, sustain: int) -> np.ndarray:
    """Harmonic tone with deep periodic amplitude modulation (3-14 Hz)."""
    f0 = _freq(rng, "tone")
    w, ph = _harmonic_timbre(rng, f0)
    t = np.arange(sustain) / sr
    depth, rate = rng.uniform(0.7, 1.0), rng.uniform(3.0, 14.0)
    am = 1 - depth * (0.5 - 0.5 * np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    return _harmonic(_phase(np.full(sustain, f0), sr), w, ph) * am * _sustained_env(rng, sustain, sr)


def _vibrato(rng: Rng, sr: int, n: int, sustain: int) -> np.ndarray:
    """Harmonic tone with periodic frequency modulation (4-9 Hz, 0.5-2 semitones)."""
    f0 = _freq(rng, "tone")
    semis, rate = rng.uniform(0.5, 2.0), rng.uniform(4.0, 9.0)
    w, ph = _harmonic_timbre(rng, f0 * 2 ** (semis / 12))
    t = np.arange(sustain) / sr
    freq = f0 * 2 ** (semis / 12 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    return _harmonic(_phase(freq, sr), w, ph) * _sustained_env(rng, sustain, sr)


def _chirps(rng: Rng, sr: int, sustain: int, up: bool) -> np.ndarray:
    """1-3 identical exponential sweeps over 1-2.5 octaves around a centre pitch."""
    centre, octaves = _freq(rng, "chirp"), rng.uniform(1.0, 2.5)
    lo, hi = centre * 2 ** (-octaves / 2), centre * 2 ** (octaves / 2)
    w, ph = _harmonic_timbre(rng, hi)
    reps = int(rng.integers(1, 4))
    seg = max(int(0.15 * sr), min(sustain // reps, int(rng.uniform(0.25, 2.0) * sr)))
    s = np.linspace(0.0, 1.0, seg) if up else np.linspace(1.0, 0.0, seg)
    one = _harmonic(_phase(lo * (hi / lo) ** s, sr), w, ph)
    one *= _ramp_envelope(seg, sr, rng.uniform(0.005, 0.04), rng.uniform(0.005, 0.06))
    gap = int(rng.uniform(0.05, 0.5) * sr)
    out = np.zeros(reps * seg + (reps - 1) * gap)
    for r in range(reps):
        out[r * (seg + gap) : r * (seg + gap) + seg] = one
    return out


def _chirp_up(rng: Rng, sr: int, n: int, sustain: int) -> np.ndarray:
    """Upward frequency sweep(s)."""
    return _chirps(rng, sr, sustain, up=True)


def _chirp_down(rng: Rng, sr: int, n: int, sustain: int) -> np.ndarray:
    """Downward sweep(s) over the same band distribution as the upward ones."""
    return _chirps(rng, sr, sustain, up=False)


def _pluck(rng: Rng, sr: int, n: int, sustain: int) -> np.ndarray:
    """Plucked string: harmonic tone, fast attack, exponential decay faster for higher harmonics."""
    f0 = _freq(rng, "pluck")
    w, ph = _harmonic_timbre(rng, f0)
    tau = _loguniform(rng, 0.08, 0.6)  # short enough for the decay to show inside a 1 s patch
    m = min(n, int(5 * tau * sr))
    t = np.arange(m) / sr
    # harmonic k decays with rate (1 + c (k - 1)) / tau: a common decay times exp(-k c t / tau)
    c = rng.uniform(0.0, 0.6)
    out = _harmonic(2 * np.pi * f0 * t, w, ph, c * t / tau) * np.exp(-(1 - c) * t / tau)
    return out * _ramp_envelope(m, sr, rng.uniform(0.001, 0.01), 0.01)


_BELL_RATIOS = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.52, 2.66, 3.01, 4.17, 5.43, 6.8])


def _bell(rng: Rng, sr: int, n: int, sustain: int) -> np.ndarray:
    """Bell: long-ringing inharmonic partials, each split into a beating doublet (0.7-4 Hz)."""
    f0 = _freq(rng, "bell")
    keep = rng.random(len(_BELL_RATIOS)) < rng.uniform(0.75, 1.0)
    keep[1] = True
    ratios = _BELL_RATIOS[keep] * (1 + rng.normal(0, 0.02, keep.sum()))
    ratios = ratios[ratios * f0 < MAX_FREQ]
    p = len(ratios)
    amps = rng.uniform(0.2, 1.0, p) * ratios ** -rng.uniform(0.0, 1.2)
    tau = _loguniform(rng, 0.8, 3.0)
    taus = tau * ratios ** -rng.uniform(0.3, 1.0)
    m = min(n, int(4 * taus.max() * sr))
    freqs = np.concatenate([ratios * f0, ratios * f0 + rng.uniform(0.7, 4.0, p)])
    amps = np.concatenate([amps, amps * rng.uniform(0.3, 1.0, p)])
    phases = rng.uniform(0, 2 * np.pi, 2 * p)
    out = _damped_sinusoids(m, sr, freqs, np.concatenate([taus, taus]), amps, phases)
    return out * _ramp_envelope(m, sr, rng.uniform(0.001, 0.005), 0.01)


def _knock(rng: Rng, sr: int, n: int, sustain: int) -> np.ndarray:
    """One short resonant impulse (a knock on wood or metal)."""
    ir = _resonant_click(rng, sr, _freq(rng, "click"), _loguniform(rng, 0.004, 0.06))
    return ir[:n]


def _click_train(rng: Rng, sr: int, n: int, sustain: int) -> np.ndarray:
    """The same kind of resonant click repeated at a regular rate (3-30 Hz, slight jitter)."""
    rate = rng.uniform(3.0, 30.0)
    tau = min(_loguniform(rng, 0.004, 0.06), 0.25 / rate)
    ir = _resonant_click(rng, sr, _freq(rng, "click"), tau)
    period = sr / rate
    count = max(2, int(sustain / period))
    times = (np.arange(count) * period + rng.normal(0, 0.03 * period, count)).clip(0, sustain - 1)
    train = np.zeros(sustain)
    np.add.at(train, times.astype(int), rng.uniform(0.7, 1.0, count))
    return _convolve(train, ir)


def _noise_burst(rng: Rng, sr: int, n: int, sustain: int) -> np.ndarray:
    """One decaying band-pass noise burst (drum- or impact-like)."""
    tau = _loguniform(rng, 0.03, 0.5)
    m = min(n, int(5 * tau * sr))
    noise = _band_noise(rng, m, sr, _freq(rng, "noise"), rng.uniform(*BAND_OCTAVES))
    env = np.exp(-np.arange(m) / (tau * sr)) * _ramp_envelope(m, sr, rng.uniform(0.0005, 0.005), 0.005)
    return noise * env


def _noise_steady(rng: Rng, sr: int, n: int, sustain: int) -> np.ndarray:
    """Sustained band-pass noise (wind, hiss, air) with a slow level wander of a few dB."""
    noise = _band_noise(rng, sustain, sr, _freq(rng, "noise"), rng.uniform(*BAND_OCTAVES))
    points = max(2, int(sustain / sr * rng.uniform(0.5, 2.0)) + 2)
    wander_db = np.interp(np.arange(sustain), np.linspace(0, sustain, points), rng.normal(0, 1.5, points))
    return noise * 10 ** (wander_db / 20) * _sustained_env(rng, sustain, sr)


def _rain(rng: Rng, sr: int, n: int, sustain: int) -> np.ndarray:
    """Irregular train of short band-pass noise bursts (rain drops, crackle)."""
    rate = rng.uniform(4.0, 25.0)
    count = max(2, rng.poisson(rate * sustain / sr))
    times = rng.integers(0, sustain, count)
    train = np.zeros(sustain)
    np.add.at(train, times, rng.uniform(0.2, 1.0, count))
    tau = _loguniform(rng, 0.003, 0.025)
    decay = np.exp(-np.arange(int(6 * tau * sr)) / (tau * sr))
    env = _convolve(train, decay)
    noise = _band_noise(rng, sustain, sr, _freq(rng, "noise"), rng.uniform(*BAND_OCTAVES))
    return noise * env


_Synth = Callable[[Rng, int, int, int], np.ndarray]
_SYNTHS: dict[str, _Synth] = {
    "tone": _tone,
    "tremolo": _tremolo,
    "vibrato": _vibrato,
    "chirp_up": _chirp_up,
    "chirp_down": _chirp_down,
    "pluck": _pluck,
    "bell": _bell,
    "knock": _knock,
    "click_train": _click_train,
    "noise_burst": _noise_burst,
    "noise_steady": _noise_steady,
    "rain": _rain,
}
CLASSES: tuple[str, ...] = tuple(_SYNTHS)


# --------------------------------------------------------------------------------------------
# Clips and the data set
# --------------------------------------------------------------------------------------------


def _active_power(x: np.ndarray) -> float:
    """Mean power over the samples whose magnitude is within 40 dB of the peak.

    SNR is set against this, so that a short knock and an 8 s drone are equally audible above
    the background instead of the short event drowning because its clip-level power is low.
    """
    mag = np.abs(x)
    active = mag > mag.max() * 0.01
    return float(np.mean(x[active] ** 2)) if active.any() else 1e-12


def synth_clip(label: str, rng: Rng, min_seconds: float, max_seconds: float) -> tuple[np.ndarray, int]:
    """One clip of class ``label``: event at a random onset over coloured noise; returns (wav, sr).

    Everything random is drawn from ``rng``, so a clip depends only on how the generator was
    seeded, never on the other clips.
    """
    sr = int(rng.choice(SAMPLE_RATES))
    n = max(1, int(round(rng.uniform(min_seconds, max_seconds) * sr)))
    sustain = max(1, min(n, max(int(0.25 * sr), int(n * rng.uniform(*SUSTAIN_FRACTION)))))
    event = _SYNTHS[label](rng, sr, n, sustain)[:n]
    event = event / np.sqrt(_active_power(event))
    onset = int(rng.integers(0, n - len(event) + 1))
    colour = str(rng.choice(["white", "pink", "brown"]))
    snr_db = rng.uniform(*SNR_DB)
    clip = _coloured_noise(rng, n, sr, colour) * 10 ** (-snr_db / 20)
    clip[onset : onset + len(event)] += event
    peak_db = rng.uniform(-30.0, -3.0)
    clip *= 10 ** (peak_db / 20) / (np.abs(clip).max() + 1e-12)
    return clip.astype(np.float32), sr


class SyntheticSource(DataSource):
    """The built-in data set as a data source: generated under ``root`` (:func:`generate`, default
    arguments) when the data module prepares its data, then read from its manifest."""

    layout = "generated by ser-ssl: root/manifest.csv and root/<split>/<class>/*.wav"

    def __init__(self, root: str = "data/synthetic") -> None:
        super().__init__(root)

    def prepare(self) -> None:
        generate(self.root)

    def load(self) -> list[Clip]:
        return read_manifest(self.root / MANIFEST)


def generate(
    root: str | Path,
    seed: int = 0,
    train_per_class: int = 60,
    val_per_class: int = 15,
    test_per_class: int = 25,
    min_seconds: float = 0.3,
    max_seconds: float = 8.0,
) -> Path:
    """Write the data set under root and return the manifest path.

    Skips work when a complete manifest for the same arguments already exists. When
    ``synthetic.json`` records other arguments (or the manifest is missing), the split folders
    are deleted and everything is regenerated; the manifest is written last and atomically, so
    its presence means the set is complete. A foreign ``manifest.csv`` (one without
    ``synthetic.json`` beside it) is never overwritten: that raises :class:`FileExistsError`.

    Each clip is drawn from ``np.random.default_rng([seed, split, class, index])``, so the same
    arguments give byte-identical files (on one platform and NumPy version) and a clip does not
    change when the counts of other splits or classes do.
    """
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    counts = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    if any(c < 0 for c in counts.values()):
        raise ValueError(f"per-class counts must be >= 0, got {counts}")
    root = Path(root)
    manifest, meta_path = root / MANIFEST, root / META
    meta = {
        "version": VERSION,
        "seed": int(seed),
        "train_per_class": int(train_per_class),
        "val_per_class": int(val_per_class),
        "test_per_class": int(test_per_class),
        "min_seconds": float(min_seconds),
        "max_seconds": float(max_seconds),
        "classes": list(CLASSES),
    }
    old = None
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
    elif manifest.exists():
        raise FileExistsError(
            f"{manifest} exists but {meta_path} does not: not a synthetic set, not touching it"
        )
    if old == meta and manifest.is_file():
        return manifest

    root.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)
    for split in SPLITS:
        shutil.rmtree(root / split, ignore_errors=True)
    atomic_write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")

    rows: list[tuple[str, str, str, str]] = []
    for split_id, split in enumerate(SPLITS):
        for class_id, label in enumerate(CLASSES):
            folder = root / split / label
            if counts[split]:
                folder.mkdir(parents=True, exist_ok=True)
            for i in range(counts[split]):
                rng = np.random.default_rng([int(seed), split_id, class_id, i])
                wav, sr = synth_clip(label, rng, min_seconds, max_seconds)
                group = f"{label}_{split}_{i:04d}"
                pcm = np.round(np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)
                sf.write(str(folder / f"{group}.wav"), pcm, sr, subtype="PCM_16", format="WAV")
                rows.append((f"{split}/{label}/{group}.wav", label, split, group))

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("filename", "label", "split", "group"))
    writer.writerows(rows)
    atomic_write_text(manifest, buf.getvalue())
    return manifest


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m ser_ssl.data.synthetic --root data/synthetic --seed 0``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/synthetic", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=60)
    parser.add_argument("--val-per-class", type=int, default=15)
    parser.add_argument("--test-per-class", type=int, default=25)
    parser.add_argument("--min-seconds", type=float, default=0.3)
    parser.add_argument("--max-seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    path = generate(
        args.root,
        seed=args.seed,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        test_per_class=args.test_per_class,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
    )
    with path.open(newline="", encoding="utf-8") as fh:
        n_clips = sum(1 for _ in csv.DictReader(fh))
    print(f"{path} ({n_clips} clips)")


if __name__ == "__main__":
    main()

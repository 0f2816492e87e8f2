"""Audio frames with exact pitch labels, made offline and seeded (``dataset=tones``): the pool for
CREPE (:mod:`confprune.models.crepe`).

Every sample is one independent 1024-sample frame at 16 kHz (64 ms), so the pool is i.i.d. by
construction. A voiced frame is a harmonic tone whose f0 follows a trajectory through the frame —
steady, a glide (±600 cents/s) or vibrato (5–7 Hz, 20–80 cents deep), a third each — around a
centre drawn log-uniformly in [``f0_min``, ``f0_max``] Hz (inside CREPE's 32–2000 Hz range); its
timbre is 1–12 harmonics (below 8 kHz) with amplitudes k^-p, p ∈ [0.5, 2], and random phases;
white noise is added at an SNR drawn from ``snr_db``. An unvoiced frame (probability
``unvoiced``) is noise only. The label is the f0 at the frame's centre sample, in cents above
10 Hz (CREPE's unit); NaN for an unvoiced frame. Frames are mean-centred and scaled to unit
standard deviation, as CREPE expects. CREPE's own evaluation used resynthesised audio with exact
f0 for the same reason: the label is known exactly. The generator, its ranges and the frame-level
i.i.d. design are ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import OptionError
from . import TaskData, limit

SAMPLE_RATE = 16000
WINDOW = 1024


def _check(n_frames: int, f0_min: float, f0_max: float, unvoiced: float, snr_db: Sequence[float]) -> None:
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        raise OptionError("n_frames", n_frames, "a positive integer")
    if not 32.0 <= f0_min < f0_max <= 2000.0:
        raise OptionError("f0_min, f0_max", (f0_min, f0_max), "32 ≤ f0_min < f0_max ≤ 2000 Hz (CREPE's range)")
    if not 0.0 <= unvoiced < 1.0:
        raise OptionError("unvoiced", unvoiced, "a fraction in [0, 1)")
    if not len(snr_db) or not all(isinstance(s, (int, float)) for s in snr_db):
        raise OptionError("snr_db", list(snr_db), "a non-empty list of SNRs in dB")


def make_frames(n: int, seed: int, *, f0_min: float = 50.0, f0_max: float = 1000.0, unvoiced: float = 0.1,
                snr_db: Sequence[float] = (0.0, 10.0, 20.0, 40.0)) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1024) float32 normalised frames and (n,) float32 labels in cents (NaN: unvoiced)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x70E5]))
    t = (np.arange(WINDOW) - WINDOW // 2) / SAMPLE_RATE  # seconds from the frame's centre
    centre = 1200 * np.log2(np.exp(rng.uniform(np.log(f0_min), np.log(f0_max), n)) / 10.0)
    kind = rng.integers(0, 3, n)  # 0 steady, 1 glide, 2 vibrato
    slope = rng.uniform(-600, 600, n) * (kind == 1)
    rate, depth, vphase = rng.uniform(5, 7, n), rng.uniform(20, 80, n) * (kind == 2), rng.uniform(0, 2 * np.pi, n)
    cents = (centre[:, None] + slope[:, None] * t[None, :]
             + depth[:, None] * np.sin(2 * np.pi * rate[:, None] * t[None, :] + vphase[:, None]))
    hz = 10.0 * 2.0 ** (cents / 1200.0)
    phase = 2 * np.pi * np.cumsum(hz, axis=1) / SAMPLE_RATE  # integrated instantaneous frequency
    n_harm = rng.integers(1, 13, n)
    power = rng.uniform(0.5, 2.0, n)
    signal = np.zeros((n, WINDOW))
    for k in range(1, 13):
        on = (k <= n_harm) & (k * hz.max(axis=1) < SAMPLE_RATE / 2)
        signal += (on * k ** -power)[:, None] * np.sin(k * phase + rng.uniform(0, 2 * np.pi, n)[:, None])
    snr = np.asarray(snr_db, dtype=np.float64)[rng.integers(0, len(snr_db), n)]
    noise = rng.standard_normal((n, WINDOW))
    sig_power = (signal ** 2).mean(axis=1)
    voiced = rng.uniform(size=n) >= unvoiced
    scale = np.sqrt(sig_power / 10.0 ** (snr / 10.0)) * voiced + (~voiced)  # unvoiced: noise only
    frames = signal * voiced[:, None] + noise * scale[:, None]
    frames -= frames.mean(axis=1, keepdims=True)
    frames /= np.maximum(frames.std(axis=1, keepdims=True), 1e-10)
    labels = np.where(voiced, cents[:, WINDOW // 2], np.nan)
    return frames.astype(np.float32), labels.astype(np.float32)


def tones_input_shape(**_: Any) -> tuple[int, ...]:
    return (WINDOW,)


def tones_output_shape(**_: Any) -> tuple[int, ...]:
    return (360,)


def tones_pool_size(n_frames: int = 3000, pool_limit: int | None = None, **_: Any) -> int:
    return limit(int(n_frames), pool_limit)


def load_tones_task(n_frames: int = 3000, seed: int = 0, f0_min: float = 50.0, f0_max: float = 1000.0,
                    unvoiced: float = 0.1, snr_db: Sequence[float] = (0.0, 10.0, 20.0, 40.0),
                    pool_limit: int | None = None, train_limit: int | None = None,
                    data_dir: str | None = None) -> TaskData:
    """The pool: ``n_frames`` frames (no training data: CREPE comes trained, so ``train_limit``
    has nothing to limit). ``data_dir`` is ignored (the frames are generated, deterministically,
    in memory)."""
    snr = list(snr_db)
    _check(n_frames, f0_min, f0_max, unvoiced, snr)
    n = limit(int(n_frames), pool_limit)
    x, y = make_frames(n, seed, f0_min=f0_min, f0_max=f0_max, unvoiced=unvoiced, snr_db=snr)
    px, py = torch.from_numpy(x), torch.from_numpy(y)
    return TaskData(train_inputs=px[:0], train_targets=py[:0], pool_inputs=px, pool_targets=py, task="pitch",
                    synthetic=True,
                    description=f"tones: {n} synthetic 1024-sample frames at 16 kHz (seed {seed}; f0 {f0_min:g}–"
                                f"{f0_max:g} Hz, {unvoiced:.0%} unvoiced, SNR {snr} dB; labels exact)")


__all__ = ["load_tones_task", "make_frames", "tones_input_shape", "tones_output_shape", "tones_pool_size"]

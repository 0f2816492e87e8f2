"""PolypGen: the official-layout reader on a generated tree, its errors, segmentation losses, and
the U-Net pipeline end to end through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from confprune.data.polyp import (
    SYNTHETIC_MARKER,
    generate_synthetic,
    list_samples,
    load_arrays,
    load_pair,
    make_augment,
)
from confprune.losses import make_loss
from confprune.record import read_summary

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("polyp") / "PolypGen", n_per_centre=3, n_sequences=2,
                              frames_per_sequence=2, seed=1)


def test_tree_has_the_official_layout_and_noisy_jpeg_masks(tree):
    for c in range(1, 7):
        assert len(list((tree / f"data_C{c}" / f"images_C{c}").glob("*.jpg"))) == 3
    assert len(list((tree / "sequenceData" / "positive" / "seq2" / "masks_seq2").glob("*_mask.jpg"))) == 2
    mask = np.asarray(Image.open(next((tree / "data_C1" / "masks_C1").glob("*_mask.jpg"))))
    assert mask.ndim == 3 and mask.shape[2] == 3  # 3-channel JPEG like the real masks
    values = np.unique(mask)
    assert len(values) > 2  # compression noise: not a clean {0, 255} mask…
    sample = list_samples(tree, [1])[0]
    _, m = load_pair(sample, 64)
    assert set(np.unique(m)) <= {0.0, 1.0}  # …which the loader binarises at > 127
    assert (tree / SYNTHETIC_MARKER).exists()


def test_loader_selects_centres_and_sequences_and_resizes_any_size(tree):
    s = list_samples(tree, [4, 5], sequences=True)
    assert {x.group for x in s} == {"C4", "C5", "seq1", "seq2"} and len(s) == 10
    sizes = {Image.open(x.image).size for x in list_samples(tree, range(1, 7))}
    assert len(sizes) > 1  # frames of different sizes…
    x, y = load_arrays(s, 32)
    assert x.shape == (10, 3, 32, 32) and y.shape == (10, 1, 32, 32)  # …all resized


def test_loader_errors_name_the_file(tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_samples(tmp_path / "nowhere", [1])
    broken = tmp_path / "broken"
    (broken / "data_C1" / "images_C1").mkdir(parents=True)
    (broken / "data_C1" / "masks_C1").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(broken / "data_C1" / "images_C1" / "a.jpg")
    with pytest.raises(FileNotFoundError, match="a.jpg has no mask"):
        list_samples(broken, [1])
    (broken / "data_C1" / "masks_C1" / "a_mask.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(OSError, match="a_mask.jpg"):
        load_arrays(list_samples(broken, [1]), 16)
    with pytest.raises(FileNotFoundError, match="data_C2"):
        list_samples(broken, [2])


def test_generator_refuses_to_overwrite_a_real_tree(tmp_path):
    real = tmp_path / "real"
    (real / "data_C1").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        generate_synthetic(real, n_per_centre=1)


def test_augmentation_moves_image_and_mask_together(tree):
    x, y = load_arrays(list_samples(tree, [1]), 32)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    ax, ay = make_augment()(x, y, seed=3)
    assert ax.shape == x.shape and ay.shape == y.shape
    assert set(torch.unique(ay).tolist()) <= {0.0, 1.0}
    # the polyp area is preserved up to the grid distortion's resampling
    assert torch.allclose(ay.sum((1, 2, 3)), y.sum((1, 2, 3)), rtol=0.25, atol=8)


def logits(mask: list[list[int]]) -> torch.Tensor:
    return (torch.tensor(mask, dtype=torch.float32)[None, None] - 0.5) * 4  # 1 → +2, 0 → −2


def test_segmentation_losses_on_hand_made_masks():
    dense = logits([[1, 1, 0], [0, 0, 0]])
    pruned = logits([[1, 0, 0], [0, 0, 1]])
    empty = logits([[0, 0, 0], [0, 0, 0]])
    gt = torch.tensor([[1, 1, 1], [0, 0, 0]], dtype=torch.float32)[None, None]
    # IoU(pruned, dense) = |{(0,0)}| / |{(0,0), (0,1), (1,2)}| = 1/3
    assert make_loss("seg_disagreement")(dense, pruned, gt).item() == pytest.approx(2 / 3)
    assert make_loss("seg_disagreement")(empty, empty, gt).item() == 0.0  # two empty masks
    # pruned covers 1 of the 3 ground-truth pixels
    assert make_loss("seg_miss")(dense, pruned, gt).item() == pytest.approx(2 / 3)
    assert make_loss("seg_miss")(dense, pruned, torch.zeros_like(gt)).item() == 0.0  # no polyp
    assert make_loss("seg_fail", tau=0.5)(dense, pruned, gt).item() == 1.0  # IoU 1/3 < 0.5
    assert make_loss("seg_fail", tau=0.3)(dense, pruned, gt).item() == 0.0
    assert make_loss("seg_fail", tau=0.9)(empty, empty, gt).item() == 0.0


@pytest.mark.slow
def test_polyp_smoke_through_the_cli(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "confprune.run", "experiment=polyp_smoke", f"hydra.run.dir={out}"],
                          capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = read_summary(out)
    cert = json.loads((out / "certificate.json").read_text())
    assert s.synthetic_data is True and cert["data"]["synthetic"] is True and "SYNTHETIC" in cert["data"]["description"]
    assert s.dense["dice"] > 0.5
    assert (out / "figures" / "mask_panel.png").exists()
    # pruning pool: conv weights and biases; BatchNorm parameters excluded by default
    from confprune.models import build_model

    unet = build_model(cert["model"]["config"])
    bn = {f"{m}.{p}" for m, mod in unet.named_modules() if isinstance(mod, torch.nn.BatchNorm2d)
          for p, _ in mod.named_parameters(recurse=False)}
    pool = set(cert["pruning"]["pool_parameters"])
    assert bn and not (pool & bn) and "head.weight" in pool and "down.0.0.bias" in pool
    # coverage within 3 binomial standard errors of 1 − δ over the splits (as for MNIST)
    tol = 3 * np.sqrt(s.delta * (1 - s.delta) / s.n_splits)
    assert s.iid_coverage >= 1 - s.delta - tol and s.coverage >= 1 - s.delta - tol
    assert s.certified_fraction > 0.5


def test_non_binary_seg_loss_with_binomial_is_refused(compose):
    from confprune.pipeline import check
    from confprune.schema import ConfigError

    for loss in ("seg_disagreement", "seg_miss"):
        _, cfg = compose(["experiment=polyp_smoke", f"loss={loss}"])
        with pytest.raises(ConfigError, match="binomial needs a binary loss"):
            check(cfg)
    _, cfg = compose(["experiment=polyp_smoke", "loss=label_01"])
    with pytest.raises(ConfigError, match="a segmentation loss"):
        check(cfg)


def test_random_group_split_is_patient_disjoint_and_seeded(tree):
    from confprune.data import load_dataset

    cfg = {"name": "polypgen", "data_dir": "unused", "root": str(tree), "split": "random_groups",
           "train_centres": [1, 2, 3], "pool_centres": [4, 5, 6], "pool_sequences": True, "pool_fraction": 0.5,
           "split_seed": 3, "image_size": 16, "augment": False}
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert torch.equal(a.pool_inputs, b.pool_inputs)  # same seed, same split
    pool_groups = set(a.description.split("pool groups ")[1].split("]")[0].strip("[").replace("'", "").split(", "))
    train_groups = set(a.description.split("train groups ")[1].split("]")[0].strip("[").replace("'", "").split(", "))
    assert pool_groups and train_groups and not pool_groups & train_groups  # whole groups on one side
    assert len(pool_groups | train_groups) == 8  # 6 centres + 2 sequences (patients)
    other = load_dataset({**cfg, "split_seed": 4})
    assert not torch.equal(other.pool_inputs[:1], a.pool_inputs[:1]) or other.pool_size != a.pool_size
    with pytest.raises(ValueError, match="split='thirds'"):
        load_dataset({**cfg, "split": "thirds"})

"""Worked example: certify a model that confprune did not train, in a few lines.

    python experiments/certify_your_model.py

A small MLP is trained here with plain PyTorch on the bundled MNIST training set; the MNIST test
set is split into calibration data (handed to confprune) and a held-out part used to look at the
deployed model. confprune certifies global magnitude pruning at α = 0.05, δ = 0.1, exports the
pruned model and certificate, and verifies the export.
"""

from __future__ import annotations

import os
import tempfile

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import confprune
from confprune.data import load_dataset

# --- the user's own model and data (nothing confprune-specific) ---------------------------
data_dir = os.environ.get("CONFPRUNE_DATA_DIR", "data")
mnist = load_dataset({"name": "mnist", "data_dir": data_dir})
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train = DataLoader(TensorDataset(mnist.train_inputs, mnist.train_targets), batch_size=256, shuffle=True)
for _ in range(2):
    for x, y in train:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
model.eval()
# A seeded random split: calibration data must be exchangeable with deployment data. (The MNIST
# test set is ordered — its first 5000 images are harder than the rest — so a contiguous cut is not.)
perm = torch.randperm(10000, generator=torch.Generator().manual_seed(1))
cal_idx, held_idx = perm[:8000], perm[8000:]
calibration = DataLoader(TensorDataset(mnist.pool_inputs[cal_idx], mnist.pool_targets[cal_idx]), batch_size=500)
held_out_x, held_out_y = mnist.pool_inputs[held_idx], mnist.pool_targets[held_idx]

# --- certify ---------------------------------------------------------------------------------
result = confprune.certify(model, calibration, loss="label_01", alpha=0.05, delta=0.1)
print(result)

# --- use and audit the result ------------------------------------------------------------------
if result.certified:
    with torch.no_grad():
        err = (result.pruned_model(held_out_x).argmax(1) != held_out_y).float().mean().item()
    print(f"held-out error of the pruned model: {err:.4f} (certified: ≤ 0.05 with prob. ≥ 0.9)")
    out = tempfile.mkdtemp(prefix="confprune-example-")
    paths = result.save(out)
    # An auditor re-derives the claim from the dense model and the calibration data; the issuer
    # chose that data here, so it verifies "with an issuer-chosen calibration set".
    print(confprune.verify_certificate(paths["certificate"], paths["pruned_model"], model, calibration))
    print("exported to", out)

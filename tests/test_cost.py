"""Cost accounting: MACs against hand-computed counts, parameters, latency bookkeeping, bytes."""

from __future__ import annotations

import torch
from torch import nn

from confprune.cost import (
    count_macs,
    count_parameters,
    file_bytes,
    measure_latency,
    serialized_bytes,
    state_bytes,
)
from confprune.models import MnistCNN, UNet


def test_mnist_cnn_macs_by_hand():
    model = MnistCNN()
    macs = count_macs(model, torch.randn(3, 1, 28, 28))
    expected = {
        "features.0": 28 * 28 * 16 * 1 * 9,  # H·W·C_out·C_in·k²
        "features.3": 14 * 14 * 32 * 16 * 9,
        "classifier.1": 32 * 7 * 7 * 128,
        "classifier.4": 128 * 10,
    }
    assert {k: v["macs"] for k, v in macs["layers"].items()} == expected
    assert macs["macs"] == sum(expected.values()) == 1_218_048
    assert macs["nonzero_macs"] == macs["macs"]  # random init: no zero weight


def test_macs_are_per_sample_and_follow_the_actual_shapes():
    model = MnistCNN()
    one = count_macs(model, torch.randn(1, 1, 28, 28))
    five = count_macs(model, torch.randn(5, 1, 28, 28))
    assert one == five
    net = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    got = count_macs(net, torch.randn(2, 2, 10, 10))
    assert got["layers"]["0"]["macs"] == 5 * 5 * 4 * 2 * 9  # stride 2: 5×5 outputs, padding counted
    assert got["layers"]["2"]["macs"] == 100 * 3


def test_transposed_conv_and_linear_on_3d_input():
    up = nn.ConvTranspose2d(6, 4, 2, stride=2)
    got = count_macs(up, torch.randn(1, 6, 5, 7))
    assert got["macs"] == 5 * 7 * 6 * 4 * 2 * 2  # every input pixel through the whole kernel
    lin = nn.Linear(8, 3)
    assert count_macs(lin, torch.randn(2, 11, 8))["macs"] == 11 * 8 * 3  # 11 positions per sample
    unet = UNet(width=4, depth=2)
    layers = count_macs(unet, torch.randn(1, 3, 16, 16))["layers"]
    assert layers["up.0"]["type"] == "ConvTranspose2d"
    assert layers["up.0"]["macs"] == 4 * 4 * 16 * 8 * 2 * 2  # bottleneck 16 ch at 4×4 → 8 ch


def test_nonzero_macs_count_only_nonzero_weights():
    conv = nn.Conv2d(4, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight[:4] = 0.0  # half of the filters
        conv.weight[4:, :, 0, 0] = 0.0  # and one tap of the others
    got = count_macs(conv, torch.randn(1, 4, 6, 6))
    assert got["macs"] == 36 * 8 * 4 * 9
    assert got["nonzero_macs"] == 36 * int(torch.count_nonzero(conv.weight)) == 36 * 4 * 4 * 8
    assert got["nonzero_macs"] < got["macs"]  # negative control: zeros are seen


def test_count_parameters_module_and_state_agree():
    unet = UNet(width=4, depth=2)
    from_module = count_parameters(unet)
    from_state = count_parameters(unet.state_dict())  # BN running stats and counters excluded
    params = list(unet.parameters())
    assert from_module == from_state == {"total": sum(p.numel() for p in params),
                                          "nonzero": sum(int(torch.count_nonzero(p)) for p in params)}
    assert from_module["nonzero"] < from_module["total"]  # BatchNorm biases start at 0
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    state["head.weight"].zero_()
    got = count_parameters(state)
    assert got["total"] == from_state["total"]
    assert got["nonzero"] == from_state["nonzero"] - state["head.weight"].numel()


def test_measure_latency_bookkeeping_and_restores_settings():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)).train()
    threads = torch.get_num_threads()
    res = measure_latency(model, torch.randn(7, 16), threads=1, budget_s=0.02)
    assert res["batch_size"] == 7 and res["threads"] == 1
    assert 3 <= res["repeats"] <= 200
    assert 0 < res["p10_s"] <= res["median_s"] <= res["p90_s"]
    assert torch.get_num_threads() == threads and model.training
    fixed = measure_latency(model, torch.randn(7, 16), repeats=4)
    assert fixed["repeats"] == 4


def test_measure_latency_channels_last_restores_layout():
    conv = nn.Conv2d(3, 4, 3)
    res = measure_latency(conv, torch.randn(2, 3, 8, 8), repeats=3, channels_last=True)
    assert res["channels_last"]
    assert conv.weight.is_contiguous()


def test_bytes(tmp_path):
    state = MnistCNN().state_dict()
    torch.save(state, tmp_path / "m.pt")
    assert file_bytes(tmp_path / "m.pt") == len((tmp_path / "m.pt").read_bytes())
    # same format; only the archive's record names differ (they come from the file name)
    assert abs(file_bytes(tmp_path / "m.pt") - serialized_bytes(state)) < 1024
    assert state_bytes(state) == 4 * sum(v.numel() for v in state.values())
    assert serialized_bytes(state) > state_bytes(state)  # the zip container's overhead

"""Cost of the MNIST CNN dense vs channel-pruned vs unstructured: MACs, latency, export sizes.

    python benchmarks/bench_structured.py [--lambdas 0.25 0.5 0.75] [--sparsity 0.89]
                                          [--threads 1 2] [--no-channels-last] [--torch-pruning]
    python benchmarks/bench_structured.py --runs RUN_DIR [RUN_DIR ...] [--threads 1 2]

``--runs`` times *certified* models instead: for each finished run, its dense checkpoint and its
exported ``pruned_model.pt`` (a physically smaller module for structure=channel, the masked dense
architecture otherwise), interleaved in one process, at batch 1 and the run's sweep batch.

Weights are random (seeded): MACs, sizes and timings do not depend on their values. Latency is
the median over 3 interleaved rounds of :func:`confprune.cost.measure_latency`'s median wall time,
with its process CPU time in brackets (steadier on a shared machine), at batch 1 and 500.
``--torch-pruning`` adds the DepGraph evaluation behind docs/structured_pruning.md: on each test
model, graph build time, groups, time to a physically pruned copy (half of every group), and
whether the pruned copy runs.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import torch
from torch import nn

from confprune.compact import save_pruned_module, save_sparse_state, sparse_linear_plan
from confprune.cost import count_macs, count_parameters, file_bytes, measure_latency
from confprune.models import MnistCNN, MnistMLP, UNet
from confprune.pruning.masks import PruningFamily, prunable_parameters
from confprune.pruning.structured import ChannelFamily


def magnitude_pruned_state(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """The model's state_dict with a fraction ``sparsity`` of all parameters zeroed by global
    magnitude (the paper's unstructured operator), built from the stable masks API."""
    params = prunable_parameters(model)
    family = PruningFamily.from_scores({k: v.detach().abs() for k, v in params.items()}, scope="global")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.update({k: v.clone() for k, v in family.apply(state, sparsity).items() if k in params})
    return state


def latency_cells(
    variants: list[tuple[str, nn.Module, object]], x: torch.Tensor, threads: int, channels_last: bool, rounds: int
) -> list[str]:
    """Median over ``rounds`` interleaved rounds (every variant once per round, so load drifts on
    a shared machine hit all variants alike) of each variant's median wall ms, with its CPU ms."""
    walls: list[list[float]] = [[] for _ in variants]
    cpus: list[list[float]] = [[] for _ in variants]
    for _ in range(rounds):
        for i, (_, model, _) in enumerate(variants):
            r = measure_latency(model, x, threads=threads, channels_last=channels_last)
            walls[i].append(r["median_s"] * 1e3)
            cpus[i].append(r["cpu_median_s"] * 1e3)
    return [f"{statistics.median(w):.2f} (cpu {statistics.median(c):.2f})" for w, c in zip(walls, cpus, strict=True)]


def cost_table(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    dense = MnistCNN().eval()
    x1, x500 = torch.randn(1, 1, 28, 28), torch.randn(500, 1, 28, 28)
    t0 = time.perf_counter()
    family = ChannelFamily(dense, x1)
    build_s = time.perf_counter() - t0
    variants: list[tuple[str, nn.Module, dict[str, torch.Tensor] | None]] = [("dense", dense, None)]
    for lam in args.lambdas:
        t0 = time.perf_counter()
        pruned = family.pruned_model(dense, lam)
        variants.append((f"channel λ={lam:g} (copy {1e3 * (time.perf_counter() - t0):.0f} ms)", pruned, None))
    masked = copy.deepcopy(dense)
    state = magnitude_pruned_state(dense, args.sparsity)
    masked.load_state_dict(state)
    variants.append((f"unstructured {args.sparsity:g}", masked.eval(), state))
    print(f"ChannelFamily(MnistCNN) built in {build_s * 1e3:.0f} ms; {family.n_units} units in "
          f"{len(family.groups)} groups; torch threads available {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.2f}; channels_last={args.channels_last}\n")
    heads = ["variant", "params (nonzero)", "MACs/sample", "nonzero MACs"]
    heads += [f"batch {b}, {t} thr (ms)" for b in (1, 500) for t in args.threads]
    heads += ["file (bytes)"]
    columns = [latency_cells(variants, x, t, args.channels_last, args.rounds) for x in (x1, x500) for t in args.threads]
    print("| " + " | ".join(heads) + " |\n|" + "---|" * len(heads))
    tmp = tempfile.mkdtemp()
    for row, (name, model, sparse_state) in enumerate(variants):
        params = count_parameters(model)
        macs = count_macs(model, x1)
        cells = [name, f"{params['total']:,} ({params['nonzero']:,})", f"{macs['macs']:,}", f"{macs['nonzero_macs']:,}"]
        cells += [column[row] for column in columns]
        path = os.path.join(tmp, "export.pt")
        if sparse_state is not None:
            save_sparse_state(sparse_state, path)
            label = "sparse"
        elif model is dense:
            torch.save(dense.state_dict(), path)
            label = "state_dict"
        else:
            save_pruned_module(model, path, {"name": "mnist_cnn"})
            label = "pruned module"
        cells.append(f"{file_bytes(path):,} ({label})")
        print("| " + " | ".join(cells) + " |")
    print("\nCSR vs dense matmul for the unstructured model's Linear layers (min / median ms):")
    for batch, x in (("1", x1), ("500", x500)):
        plan = sparse_linear_plan(dense, state, x)
        row = ", ".join(
            f"{k}: {v['kernel']} (dense {v['dense_min_s'] * 1e3:.3f} / {v['dense_s'] * 1e3:.3f}, "
            f"csr {v['csr_min_s'] * 1e3:.3f} / {v['csr_s'] * 1e3:.3f}, density {v['density']:.2f})"
            for k, v in plan.items()
        )
        print(f"- batch {batch}: {row}")


def certified_runs_table(args: argparse.Namespace) -> None:
    """Dense vs certified latency of finished runs, interleaved in this process (every run's
    dense model and certified export measured in the same rounds)."""
    import json
    from pathlib import Path

    from confprune.compact import load_pruned_module
    from confprune.models import build_model
    from confprune.record import read_summary

    print(f"load average {os.getloadavg()[0]:.2f}; torch threads available {torch.get_num_threads()}; "
          f"channels_last={args.channels_last}; median of {args.rounds} interleaved rounds, ms (process CPU ms)\n")
    heads = ["run", "structure", "λ̂", "MACs dense → certified"]
    heads += [f"{who} b{b}, {t} thr" for b in ("1", "B") for t in args.threads for who in ("dense", "cert.")]
    heads += ["speedup b1", "speedup bB"]
    print("| " + " | ".join(heads) + " |\n|" + "---|" * len(heads))
    for run in args.runs:
        d = Path(run)
        cert, s = json.loads((d / "certificate.json").read_text()), read_summary(d)
        if not cert["certified"]:
            print(f"| {d} | nothing certified |")
            continue
        dense = build_model(cert["model"]["config"]).eval()
        # weights_only: a certificate names this file, and nothing a certificate names is unpickled.
        ckpt = torch.load(cert["model"]["checkpoint"], map_location="cpu", weights_only=True)
        dense.load_state_dict(ckpt["state_dict"] if "state_dict" in ckpt else ckpt["model"])
        if s.structure == "channel":
            certified = load_pruned_module(d / "pruned_model.pt", build_model(cert["model"]["config"]))
        else:
            certified = copy.deepcopy(dense)
            certified.load_state_dict(torch.load(d / "pruned_model.pt", map_location="cpu", weights_only=True))
        shape = tuple(s.cost["dense"].get("input") or ((1, 28, 28) if "mnist" in cert["model"]["name"] else (3, 64, 64)))
        big = int(cert["sweep"].get("batch_size") or 500)
        cells: list[list[str]] = []
        ratios = {}
        for b in (1, big):
            x = torch.randn(b, *shape)
            for t in args.threads:
                pair = latency_cells([("dense", dense, None), ("certified", certified.eval(), None)], x, t,
                                     args.channels_last, args.rounds)
                cells.append(pair)
                walls = [float(c.split()[0]) for c in pair]
                ratios.setdefault(b, walls[0] / walls[1])  # speedup at the first thread count listed
        macs = f"{s.cost['dense']['macs'] / 1e6:.2f}M → {s.cost['deploy']['macs'] / 1e6:.2f}M"
        label = f"{s.experiment} {s.criterion}/{s.scope}, {s.loss} α={s.alpha:g} ({d.parent.name}/{d.name})"
        row = [label, s.structure, f"{s.lambda_hat.deploy:g}", macs]
        row += [c for pair in cells for c in pair]
        row += [f"{ratios[1]:.2f}×", f"{ratios[big]:.2f}× (B={big})"]
        print("| " + " | ".join(row) + " |")


class ResidualNet(nn.Module):
    """A small ResNet-style block: the addition couples the stem's and the block's channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c1, self.b1 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        return self.fc(x.mean((2, 3)))


def torch_pruning_table() -> None:
    import torch_pruning as tp

    cases = {
        "MnistCNN": (MnistCNN, torch.randn(1, 1, 28, 28)),
        "MnistMLP": (MnistMLP, torch.randn(1, 1, 28, 28)),
        "UNet()": (UNet, torch.randn(1, 3, 64, 64)),
        "UNet(width=8, depth=3)": (lambda: UNet(width=8, depth=3), torch.randn(1, 3, 64, 64)),
        "Sequential MLP": (lambda: nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                                                 nn.Linear(16, 3)), torch.randn(1, 20)),
        "residual block": (ResidualNet, torch.randn(1, 3, 16, 16)),
    }
    roots = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    print(f"\ntorch-pruning {tp.__version__} with torch {torch.__version__} (median of 3, ms)\n")
    print("| model | graph build | groups (max members) | tp pruned copy, half of each group | runs, output shape kept "
          "| ChannelFamily build | ChannelFamily.pruned_model(λ=0.5) |\n|---|---|---|---|---|---|---|")
    for name, (factory, x) in cases.items():
        torch.manual_seed(0)
        model = factory().eval()
        out_layer = [m for m in model.modules() if isinstance(m, roots)][-1]
        builds, copies = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
            groups = list(graph.get_all_groups(ignored_layers=[out_layer], root_module_types=roots))
            builds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pruned = copy.deepcopy(model)
            g2 = tp.DependencyGraph().build_dependency(pruned, example_inputs=x, verbose=False)
            out2 = [m for m in pruned.modules() if isinstance(m, roots)][-1]
            for group in list(g2.get_all_groups(ignored_layers=[out2], root_module_types=roots)):
                group.prune(idxs=list(range(len(group[0].idxs) // 2)))
            copies.append(time.perf_counter() - t0)
        with torch.no_grad():
            try:
                ok = str(pruned(x).shape == model(x).shape)
            except RuntimeError as err:  # report, do not hide
                ok = f"fails: {err}"
        ours_build, ours_copy = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            fam = ChannelFamily(model, x)
            ours_build.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            fam.pruned_model(model, 0.5)
            ours_copy.append(time.perf_counter() - t0)
        med = lambda v: f"{sorted(v)[1] * 1e3:.1f}"  # noqa: E731
        print(f"| {name} | {med(builds)} | {len(groups)} ({max(len(g) for g in groups)}) | {med(copies)} | {ok} "
              f"| {med(ours_build)} | {med(ours_copy)} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--sparsity", type=float, default=0.89)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per setting")
    ap.add_argument("--torch-pruning", action="store_true")
    ap.add_argument("--runs", nargs="+", default=None, help="finished run directories: time their certified exports")
    args = ap.parse_args()
    if args.runs:
        certified_runs_table(args)
        return
    cost_table(args)
    if args.torch_pruning:
        torch_pruning_table()


if __name__ == "__main__":
    main()

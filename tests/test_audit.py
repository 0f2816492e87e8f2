"""Issue 25: false claims that verified without editing a byte, and results that were lost or wrong.

Each forgery is built here as an adversary would build it and must come out NOT VERIFIED (or,
where the issuer's choice cannot be audited, never as a plain pass); each honest case must verify.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import confprune
from confprune.calibrate import deployment_indices
from confprune.compact import read_pruned_file
from confprune.errors import OptionError
from confprune.losses import make_loss
from confprune.stats import certified_index, make_fwer, pvalues_from_losses, reject_on_grid
from confprune.verify import EXIT_CODES, FAILED, ISSUER, PLAIN
from confprune.verify import main as verify_main

SMOKE = ["experiment=mnist_smoke", "figures=false", "cost.latency=false"]


def failed(report) -> set[str]:
    return {c.name for c in report.failed}


# ------------------------------------------------------------------ seed shopping


def shopped_seed(losses: np.ndarray, n_cal: int, alpha: float, delta: float, tries: int = 50000) -> tuple[int, int]:
    """What an issuer with a cached loss table can do in seconds: try seeds until the deployment
    draw certifies a grid point whose pool risk exceeds α. Returns (seed, certified index)."""
    truth = losses.mean(axis=1)
    n_pool = losses.shape[1]
    procedure = make_fwer("fixed_sequence")
    for seed in range(tries):
        idx = deployment_indices(n_pool, n_cal, seed)
        p = pvalues_from_losses("binomial", losses[:, idx], alpha, delta)
        j = int(certified_index(reject_on_grid(procedure, p, delta)))
        if j >= 0 and truth[j] > alpha + 0.02:
            return seed, j
    raise AssertionError("no shopping seed found: the test's premise does not hold")


def test_a_shopped_seed_moves_nothing_and_a_shopped_set_is_caught(compose, tmp_path):
    """The audit's reproduction: mnist_smoke, n_cal = 100, α = 0.05. A seed searched for on the
    cached table would certify a λ whose pool risk is far above α. Through the runner it buys
    nothing: ``calibration.split_seed`` seeds only the validation splits, and the deployment draw
    comes from the commitment, so the shopped run deploys what the honest one does. Handed to the
    library as the issuer's own set, the shopped points calibrate consistently (every p-value
    re-derives), but the 1900 points outside them reject the claim at level 10⁻³: NOT VERIFIED."""
    from confprune.api import certify_from_table
    from confprune.integrity import fingerprint
    from confprune.pipeline import run
    from confprune.pruning import FamilySpec
    from confprune.sweep import LossTable

    first = tmp_path / "first"
    _, cfg = compose([*SMOKE, "calibration.n_cal=100", "calibration.alpha=0.05"], first)
    honest = run(cfg, first)
    table = LossTable.load(first / "losses.npz")
    seed, j = shopped_seed(table.losses, 100, 0.05, cfg.calibration.delta)
    shop = tmp_path / "shopped"
    _, cfg = compose([*SMOKE, "calibration.n_cal=100", "calibration.alpha=0.05", f"calibration.split_seed={seed}"], shop)
    shopped = run(cfg, shop)
    assert shopped.certificate["calibration_indices"] == honest.certificate["calibration_indices"]
    assert shopped.summary.lambda_hat.deploy == honest.summary.lambda_hat.deploy
    assert shopped.summary.deploy == honest.summary.deploy
    # The shopped points as an issuer-chosen set, through the library.
    model, (x, y) = _dense(first), _pool(cfg)
    family = FamilySpec.from_config(honest.certificate["pruning"]["config"]).build(model)
    idx = deployment_indices(table.losses.shape[1], 100, seed)
    res = certify_from_table(model, family, table, make_loss("label_01"), alpha=0.05, delta=cfg.calibration.delta,
                             calibration_indices=idx,
                             data_info={"calibration_fingerprint": fingerprint(x, y, np.sort(idx))})
    assert res.certified and res.lambda_index == j and table.losses[j].mean() > 0.05 + 0.02  # a false claim
    report = confprune.verify_certificate(res.certificate, res.pruned_state, model, (x, y), data_from_registry=True)
    assert report.status == FAILED
    assert failed(report) == {"holdout test[label_01<=0.05]"}, str(report)  # every other field re-derives
    # The honest run verifies as a plain pass, held-out test included.
    exported = first / "pruned_model.pt"
    check = confprune.verify_certificate(first / "certificate.json", exported if exported.exists() else None,
                                         model, (x, y), data_from_registry=True)
    assert check.status == PLAIN, str(check)
    if exported.exists():
        assert any(c.name.startswith("holdout test") and c.passed for c in check.checks)


def _dense(run_dir: Path) -> nn.Module:
    from confprune.models import build_model

    cert = json.loads((run_dir / "certificate.json").read_text())
    model = build_model(cert["model"]["config"])
    blob = torch.load(cert["model"]["checkpoint"], map_location="cpu", weights_only=True)
    model.load_state_dict(blob["state_dict"] if "state_dict" in blob else blob)
    return model.eval()


def _pool(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    from confprune.data import load_dataset

    data = load_dataset(cfg.dataset)
    return data.pool_inputs, data.pool_targets


def test_the_claim_is_tested_on_data_the_verifier_supplies():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    x = torch.randn(1500, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    res = confprune.certify(model, (x[:1000], y[:1000]), alpha=0.1, delta=0.1, measure_cost=False,
                            lambdas=[round(0.05 * i, 2) for i in range(20)])
    assert res.certified
    fresh = (x[1000:], y[1000:])
    ok = confprune.verify_certificate(res.certificate, res.pruned_state, model, (x[:1000], y[:1000]), holdout=fresh)
    assert ok.ok and any(c.name.startswith("verifier data test") and c.passed for c in ok.checks), str(ok)
    # Labels the pruned model gets wrong everywhere: the verifier's data reject the claim.
    with torch.no_grad():
        wrong = (res.pruned_model(fresh[0]).argmax(1) + 1) % 3
    bad = confprune.verify_certificate(res.certificate, res.pruned_state, model, (x[:1000], y[:1000]),
                                       holdout=(fresh[0], wrong))
    assert "verifier data test[label_01<=0.1]" in failed(bad)


# ------------------------------------------------------------------ the physical model


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture(scope="module")
def channel_export(tmp_path_factory):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(600, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    res = confprune.certify(model, (x, y), alpha=0.3, delta=0.1, structure="channel", measure_cost=False,
                            lambdas=[0.0, 0.125])  # 7 of 8 channels kept, risk 0.21
    assert res.certified and res.lambda_hat > 0
    out = tmp_path_factory.mktemp("channel")
    res.save(out)
    return model, x, y, res, out


@pytest.mark.parametrize("record,key,value", [
    ("bn", "eps", 10.0),  # the audit: a BatchNorm eps of 10 rebuilt a model whose risk was 0.97
    ("conv", "padding_mode", "circular"),
])
def test_an_export_whose_module_records_were_edited_is_not_verified(channel_export, tmp_path, record, key, value):
    model, x, y, res, out = channel_export
    honest = confprune.verify_certificate(out / "certificate.json", out / "pruned_model.pt", model, (x, y))
    assert honest.ok and "pruned model modules" not in failed(honest), str(honest)
    payload = read_pruned_file(out / "pruned_model.pt")
    payload["modules"][record]["args"][key] = value  # the tensors, and their checksum, are unchanged
    forged = tmp_path / "pruned_model.pt"
    torch.save(payload, forged)
    report = confprune.verify_certificate(out / "certificate.json", forged, model, (x, y))
    assert failed(report) == {"pruned model modules"}, str(report)


# ------------------------------------------------------------------ bounds and fields


def test_a_binomial_bound_swapped_in_for_a_fractional_loss_is_not_verified():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(800, 6)
    res = confprune.certify(model, x, loss="tv_distance", alpha=0.1, delta=0.1, bound="hb", measure_cost=False,
                            lambdas=[round(0.05 * i, 2) for i in range(20)])
    forged = copy.deepcopy(res.certificate)
    cal = None
    from confprune.pruning import build_family
    from confprune.sweep import compute_loss_table

    table = compute_loss_table(model, build_family(model), forged["grid"], x, make_loss("tv_distance"), progress=False)
    cal = table.losses[:, np.asarray(forged["calibration_indices"])]
    forged["bound"] = "binomial"
    from confprune.stats import binomial_pvalue

    # The library refuses a binomial p-value on fractional losses; the forger rounds the sums itself.
    forged["p_values"] = [float(p) for p in binomial_pvalue(np.rint(cal.sum(axis=1)), cal.shape[1], 0.1)]
    forged["claim"] = forged["claim"].replace("hb p-values", "binomial p-values")
    report = confprune.verify_certificate(forged, res.pruned_state, model, x)
    assert "bound" in failed(report), str(report)


def test_recorded_but_unverifiable_fields_are_marked_as_such(channel_export):
    model, x, y, res, out = channel_export
    cert = json.loads((out / "certificate.json").read_text())
    cert["cost"] = {"machine": {"cpu": "somewhere"}, "deploy": {"latency": {"batch_1": {"median_s": 1e-4}}}}
    report = confprune.verify_certificate(cert, out / "pruned_model.pt", model, (x, y))
    text = str(report)
    assert "RECORDED  cost.latency" in text and "PASS  cost.latency" not in text
    assert "RECORDED  cost.machine" in text
    cert["pruning"]["criterion"] = "activation"
    assert "pruning.criterion" in failed(confprune.verify_certificate(cert, out / "pruned_model.pt", model, (x, y)))


# ------------------------------------------------------------------ the CLI's verdicts


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import confprune.run  # noqa: F401
    from confprune.pipeline import run

    out = tmp_path_factory.mktemp("audit_smoke")
    with initialize_config_dir(version_base="1.3", config_dir=str(Path(__file__).resolve().parents[1] / "conf")):
        cfg = compose("config", overrides=[*SMOKE, f"paths.output_dir={out}"])
    from confprune.run import config_hash

    conf = OmegaConf.to_object(cfg)
    run(conf, out, config_hash(conf))
    return out


def test_cli_exit_codes_say_plain_issuer_failed_or_cannot_check(smoke_run, tmp_path, capsys):
    cert_path, model_path = smoke_run / "certificate.json", smoke_run / "pruned_model.pt"
    assert verify_main([str(cert_path), str(model_path)]) == EXIT_CODES[PLAIN] == 0
    cert = json.loads(cert_path.read_text())
    relabelled = copy.deepcopy(cert)
    relabelled["calibration"] = {"source": "issuer"}  # a seeded draw relabelled as the issuer's choice
    (tmp_path / "issuer.json").write_text(json.dumps(relabelled))
    assert verify_main([str(tmp_path / "issuer.json"), str(model_path)]) == EXIT_CODES[ISSUER] == 3
    assert verify_main([str(cert_path), str(tmp_path / "missing.pt")]) == 2
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    assert verify_main([str(cert_path), str(tmp_path / "junk.pt")]) == 2
    broken = copy.deepcopy(cert)
    broken["lambda_index"] = "two"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    assert verify_main([str(tmp_path / "broken.json"), str(model_path)]) == 2
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    assert verify_main([str(cert_path), str(model_path), "--dense", str(tmp_path / "garbage.pt")]) == 2
    rooted = copy.deepcopy(cert)
    rooted["data"]["dataset"]["root"] = str(tmp_path / "issuers_folder")
    (tmp_path / "rooted.json").write_text(json.dumps(rooted))
    assert verify_main([str(tmp_path / "rooted.json"), str(model_path)]) == 2
    assert "--dataset-root" in capsys.readouterr().err
    described = copy.deepcopy(cert)
    described["data"]["synthetic"] = not cert["data"]["synthetic"]
    (tmp_path / "described.json").write_text(json.dumps(described))
    assert verify_main([str(tmp_path / "described.json"), str(model_path)]) == 1
    assert "FAIL  data.synthetic" in capsys.readouterr().out


def test_resume_does_not_trust_a_summary_without_artifact_checksums(smoke_run, tmp_path):
    from confprune.record import damaged_artifacts, read_summary, write_summary

    run_dir = tmp_path / "copy"
    shutil.copytree(smoke_run, run_dir)
    summary = read_summary(run_dir)
    assert damaged_artifacts(run_dir, summary) == []
    summary.artifacts = {}
    write_summary(summary, run_dir)
    assert damaged_artifacts(run_dir, read_summary(run_dir))


# ------------------------------------------------------------------ data read once


def test_a_one_shot_generator_of_batches_is_refused_not_half_read():
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    x = torch.randn(600, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    with pytest.raises(OptionError, match="one-shot generator"):
        confprune.certify(model, ((x[i:i + 100], y[i:i + 100]) for i in range(0, 600, 100)), measure_cost=False)
    res = confprune.certify(model, [(x[i:i + 100], y[i:i + 100]) for i in range(0, 600, 100)], measure_cost=False)
    assert res.calibration.n == 600


# ------------------------------------------------------------------ refused before any work


@pytest.mark.parametrize("overrides,key", [
    (["calibration.split_seed=-1"], "calibration.split_seed"),
    (["experiment=pareto_mnist", "knobs.validation_reps=0"], "knobs.validation_reps"),
    (["model.hidden=0"], "model"),
    (["model.channels=[]"], "model"),
    (["model.dropout=2.0"], "model"),
    (["trainer.weight_decay=-1"], "trainer.weight_decay"),
    (["pruning=mu_updates", "trainer.trajectory.track_updates=false"], "trainer.trajectory.track_updates"),
    (["dataset.pool_limit=-5"], "dataset.pool_limit"),
    (["dataset.train_limit=0"], "dataset.train_limit"),
])
def test_late_failures_are_refused_at_the_door(compose, overrides, key):
    from confprune.errors import ConfigError
    from confprune.schema import check_config

    _, cfg = compose(["experiment=mnist_smoke", *overrides])
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert err.value.key == key, str(err.value)


def test_wandb_online_without_a_key_is_refused(compose, monkeypatch, tmp_path):
    from confprune.errors import ConfigError
    from confprune.schema import check_config

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    _, cfg = compose(["experiment=mnist_smoke", "logger=wandb", "logger.mode=online"])
    with pytest.raises(ConfigError, match="logger.mode"):
        check_config(cfg)


def test_empty_knobs_and_meta_models_are_refused_at_once():
    from confprune.multiknob import certify_pareto

    model = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(50, 4)
    y = torch.zeros(50, dtype=torch.long)
    with pytest.raises(OptionError, match="knobs"):
        certify_pareto(model, (x, y), knobs=[], risks=[])
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(OptionError, match="meta device"):
        confprune.certify(meta, (x, y))


def test_a_write_that_torch_reports_as_a_runtime_error_is_an_os_error(tmp_path):
    from confprune.cache import atomic_write, cached

    def failing(tmp: str) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0: "
                           "file write failed")

    with pytest.raises(OSError, match="could not write"):
        atomic_write(tmp_path / "model.pt", failing)
    assert not list(tmp_path.iterdir())  # no temp file left behind
    value, from_cache = cached(tmp_path / "entry.pt", lambda p: None, lambda: 42, lambda v, tmp: failing(tmp), "model")
    assert value == 42 and not from_cache  # computed, kept in memory, not lost


def test_a_single_run_into_a_running_multiruns_job_directory_is_refused(tmp_path):
    from filelock import FileLock

    from confprune.errors import ConfigError
    from confprune.guard import LOCK, directory_lock

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    held = FileLock(str(sweep / LOCK))
    held.acquire()
    try:
        with pytest.raises(ConfigError, match="running confprune multirun"):
            with directory_lock(sweep / "0"):
                pass
    finally:
        held.release()
    with directory_lock(sweep / "0"):  # once the multirun is over, the job directory can be used
        pass


def test_a_polyp_tree_with_a_missing_mask_or_a_truncated_image_says_which_file(tmp_path):
    from confprune.data.polyp import PolypDataError, generate_synthetic, list_samples, load_pair

    root = generate_synthetic(tmp_path / "polyp", n_per_centre=2, n_sequences=0)
    samples = list_samples(root, [1])
    samples[0].image.write_bytes(samples[0].image.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(PolypDataError, match=samples[0].image.name):
        load_pair(samples[0], 32)
    samples[1].mask.unlink()
    with pytest.raises(PolypDataError, match="has no mask"):
        list_samples(root, [1])


def test_a_model_trained_on_the_calibration_data_is_caught_when_the_training_set_is_given(channel_export):
    model, x, y, res, out = channel_export
    cert, exported = out / "certificate.json", out / "pruned_model.pt"
    clean = confprune.verify_certificate(cert, exported, model, (x, y), train_inputs=torch.randn(300, 1, 8, 8))
    assert "training data disjoint from the data" not in failed(clean), str(clean)
    leaked = confprune.verify_certificate(cert, exported, model, (x, y), train_inputs=torch.cat([x[:50], x[:50] * 2]))
    assert failed(leaked) == {"training data disjoint from the data"}
    unknown = confprune.verify_certificate(cert, exported, model, (x, y))
    assert "RECORDED  training data: not given" in str(unknown)


def test_moving_the_cache_or_data_directory_keeps_the_config_hash(compose, tmp_path):
    from confprune.run import config_hash

    _, a = compose(["experiment=mnist_smoke"])
    _, b = compose(["experiment=mnist_smoke", f"paths.cache_dir={tmp_path}/c", f"paths.data_dir={tmp_path}/d"])
    _, c = compose(["experiment=mnist_smoke", "calibration.alpha=0.2"])
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_the_runs_loss_table_is_byte_reproducible(smoke_run, compose, tmp_path):
    from confprune.pipeline import run

    _, cfg = compose(SMOKE, tmp_path)
    run(cfg, tmp_path)  # the same config again (the table now comes from the cache)
    assert (tmp_path / "losses.npz").read_bytes() == (smoke_run / "losses.npz").read_bytes()


def test_a_resumed_run_leaves_no_orphan_temp_files(smoke_run, compose, tmp_path):
    import socket

    from confprune.run import run_logged

    run_dir = tmp_path / "copy"
    shutil.copytree(smoke_run, run_dir)
    host = socket.gethostname().replace(".", "-")
    orphan = run_dir / f".summary.json.{host}.999999999.abc.tmp"  # a write killed mid-way (no such pid)
    orphan.write_text("{")
    cfg, _ = compose(SMOKE, run_dir)
    run_logged(cfg)  # the finished run is skipped …
    assert not orphan.exists()  # … and what a killed write left behind is gone
    cert = json.loads((run_dir / "certificate.json").read_text())
    assert any("exchangeable" in line for line in cert["unprovable"])


def test_a_forged_cache_entry_is_recomputed_not_trusted(tmp_path, monkeypatch):
    """Issue 25: an entry written with the right name and key but other contents (a forged loss
    table, dense metrics, a latency) flowed into summaries and certificates. Entries are sealed
    with an HMAC under this user's secret; one that fails its seal is recomputed."""
    from confprune.cache import SECRET_ENV, cached

    monkeypatch.setenv(SECRET_ENV, "this user's secret")
    calls = []

    def compute():
        calls.append(1)
        return {"risk": 0.1}

    def entry():
        return cached(tmp_path / "entry.json", lambda p: json.loads(p.read_text()), compute,
                      lambda v, tmp: Path(tmp).write_text(json.dumps(v)), "latency")

    assert entry() == ({"risk": 0.1}, False)
    assert entry() == ({"risk": 0.1}, True) and len(calls) == 1
    (tmp_path / "entry.json").write_text(json.dumps({"risk": 0.0}))  # forged in place, seal untouched
    assert entry() == ({"risk": 0.1}, False) and len(calls) == 2
    monkeypatch.setenv(SECRET_ENV, "someone else's secret")  # an entry sealed by another user
    assert entry() == ({"risk": 0.1}, False) and len(calls) == 3
    (tmp_path / "entry.json.seal").unlink()  # no seal at all
    assert entry()[1] is False and len(calls) == 4


def test_no_code_path_unpickles_what_it_reads():
    """A checkpoint or table a certificate names can come from anyone: every torch.load is
    weights_only=True and no NumPy load allows pickles (issue 25: a benchmark unpickled one)."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("src", "benchmarks", "experiments"):
        for path in (root / folder).rglob("*.py"):
            for line in path.read_text().splitlines():
                unsafe = any(n in line for n in ("weights_only=False", "allow_pickle=True", "pickle.load"))
                if unsafe or ("torch.load(" in line and "weights_only=True" not in line):
                    offenders.append(f"{path.relative_to(root)}: {line.strip()}")
    assert not offenders, offenders


@pytest.mark.parametrize("args,needle", [
    (["model.dropout=2.0"], "model"),  # raised inside the run guard: Hydra ran the job anyway, unlocked
    (["hydra.run.dir=/etc/hostname/run"], "hydra output dir"),  # a directory that cannot be made
])
def test_the_cli_refuses_before_any_work_in_one_line(args, needle):
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "confprune.run", *SMOKE, *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], env=dict(os.environ), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.statistical
def test_the_held_out_test_keeps_honest_claims_and_rejects_shopped_ones():
    """Known truth for verify's held-out test (level 10⁻³): nested losses on a 2000-point pool
    whose row means are the true risks, LTT (binomial, fixed sequence, δ = 0.1) on 100 points drawn
    by each of 20000 seeds, the test on the 1900 others. Honest claims (true risk ≤ α) must be
    rejected at most 10⁻³ + 3 Monte Carlo s.e. of the time; negative control: the claims a seed
    shopper harvests (true risk ≥ α + 0.02) must be rejected nearly always (≥ 0.99)."""
    from confprune.verify import HOLDOUT_LEVEL, _claim_test_pvalue

    n_pool, n_cal, alpha, delta, seeds = 2000, 100, 0.05, 0.1, 20000
    u = (np.random.default_rng(0).permutation(n_pool) + 0.5) / n_pool
    losses = (u[None, :] < np.linspace(0.0, 0.2, 21)[:, None]).astype(np.float64)
    truth = losses.mean(axis=1)
    procedure = make_fwer("fixed_sequence")
    honest = shopped = honest_rejected = shopped_rejected = 0
    for seed in range(seeds):
        idx = deployment_indices(n_pool, n_cal, seed)
        j = int(certified_index(reject_on_grid(procedure, pvalues_from_losses("binomial", losses[:, idx], alpha, delta),
                                               delta)))
        if j < 0 or (alpha < truth[j] < alpha + 0.02):
            continue
        rest = np.setdiff1d(np.arange(n_pool), idx)
        rejected = _claim_test_pvalue(losses[j, rest], alpha) < HOLDOUT_LEVEL
        if truth[j] <= alpha:
            honest, honest_rejected = honest + 1, honest_rejected + rejected
        else:
            shopped, shopped_rejected = shopped + 1, shopped_rejected + rejected
    assert honest > 10000 and shopped > 50, (honest, shopped)
    level = HOLDOUT_LEVEL
    assert honest_rejected / honest <= level + 3 * np.sqrt(level * (1 - level) / honest), (honest_rejected, honest)
    assert shopped_rejected / shopped >= 0.99, (shopped_rejected, shopped)

"""The deployment draw comes from a commitment to what precedes calibration (issue 25): the
issuer cannot pick its seed, nuisance settings buy no re-draw, and every material change is a
different draw that verify re-derives."""

from __future__ import annotations

import json

import numpy as np

from confprune.commitment import (
    check_draw,
    commitment_of_certificate,
    committed_draw,
    digest,
    family_commitment,
    make_commitment,
    seed_of,
)
from confprune.pipeline import run
from confprune.stats.risks import RiskSpec

BASE = dict(dense_checksum="d" * 64, pool_fingerprint="f" * 64, pool_size=2000, n_cal=1500,
            families=[family_commitment({"criterion": "magnitude", "structure": "unstructured", "seed": 0})],
            risks=[RiskSpec("label_01", 0.1, "binomial")], loss_options={}, delta=0.1, fwer="fixed_sequence",
            fwer_options={}, grid=[0.0, 0.5, 0.9])


def test_the_digest_is_canonical_and_every_committed_field_changes_the_seed():
    c = make_commitment(**BASE)
    assert digest(c) == digest(json.loads(json.dumps(c)))  # survives a JSON round trip (the certificate)
    assert committed_draw(c)["seed"] == seed_of(digest(c)) < 2**60
    changes = {"dense_checksum": "e" * 64, "pool_fingerprint": "0" * 64, "n_cal": 1499, "delta": 0.05,
               "fwer": "bonferroni", "grid": [0.0, 0.5, 0.91],
               "risks": [RiskSpec("label_01", 0.1000000001, "binomial")],
               "families": [family_commitment({"criterion": "l1", "structure": "channel", "seed": 0})]}
    seeds = {seed_of(digest(make_commitment(**{**BASE, k: v}))) for k, v in changes.items()}
    assert len(seeds) == len(changes) and committed_draw(c)["seed"] not in seeds


def test_a_seed_the_criterion_does_not_use_buys_no_redraw():
    # magnitude and l1 draw nothing with the family's seed: it is left out of the commitment;
    # the random criterion's seed changes its family, so it stays in.
    for criterion in ("magnitude", "l1", "mu"):
        assert family_commitment({"criterion": criterion, "seed": 0}) == family_commitment({"criterion": criterion,
                                                                                            "seed": 7})
    for criterion in ("random", "sipp", "activation"):
        assert family_commitment({"criterion": criterion, "seed": 0}) != family_commitment({"criterion": criterion,
                                                                                            "seed": 7})


def test_the_runner_draws_from_the_commitment_not_the_split_seed(compose, tmp_path):
    # Two runs that differ only in calibration.split_seed (the validation splits' seed) deploy the
    # same calibration set; a run at another α draws another set. Each certificate's draw checks.
    certs = []
    for i, extra in enumerate([[], ["calibration.split_seed=41871"], ["calibration.alpha=0.05"]]):
        _, cfg = compose(["experiment=mnist_smoke", "figures=false", "cost.latency=false", "calibration.n_splits=5",
                          *extra])
        certs.append(run(cfg, tmp_path / str(i)).certificate)
    idx = [c["calibration_indices"] for c in certs]
    assert idx[0] == idx[1] and idx[0] != idx[2]
    assert certs[0]["calibration"]["seed"] == certs[1]["calibration"]["seed"] != certs[2]["calibration"]["seed"]
    for cert in certs:
        data = cert["data"]
        assert all(ok for _, ok, _ in check_draw(cert, data["data_fingerprint"], data["points"]))
        assert cert["calibration"]["commitment"] == commitment_of_certificate(cert, data["data_fingerprint"],
                                                                              data["points"])
    assert np.unique(idx[0]).size == len(idx[0]) == certs[0]["n_cal"]

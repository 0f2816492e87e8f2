"""confprune: certified neural-network pruning with Learn-Then-Test.

``confprune.certify(model, data, ...)`` certifies a pruning ratio for your own model;
``confprune.verify_certificate(...)`` (or ``python -m confprune.verify``) re-checks an exported certificate; ``python -m confprune.run`` runs the
Hydra pipeline. The statistics live in ``confprune.stats`` (NumPy/SciPy only).
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: importing confprune.stats must not import torch
    if name in ("certify", "certify_from_table", "CertifiedPruning"):
        from . import api

        return getattr(api, name)
    if name in ("verify_certificate", "VerificationReport"):
        from . import verify

        return getattr(verify, name)
    raise AttributeError(f"module 'confprune' has no attribute {name!r}")


__all__ = ["CertifiedPruning", "VerificationReport", "__version__", "certify", "certify_from_table", "verify_certificate"]

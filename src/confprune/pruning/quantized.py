"""The int8 wrapper: any family whose pruned models then have their Linear layers quantised to
int8 (dynamic quantisation: weights int8, activations quantised on the fly). Same masks and λ as
the base family; the sweep evaluates (and LTT calibrates) the quantised model itself.

Per sample (ours): torch's dynamic quantisation scales the activations by the range of the whole
input tensor, so one sample's output depends on the other samples of its batch (measured: one
outlier in a batch of 500 flipped 105 of the other 499 predictions of a Linear layer). A
certificate calibrated on batches of 500 would then not describe the same model serving batch 1.
Each quantised Linear here runs torch's int8 kernel on one sample at a time
(:class:`PerSampleDynamicLinear`), so a sample's output is the same at every batch size; the
price is a loop over the batch, which the measured latency includes.

Export (ours): the base family's export (masked state or smaller module) with ``quantize: true``
in the certificate's pruning config; :func:`quantize_linear` is deterministic, so the deployed
int8 model is re-derived from it exactly (verify does). MACs are counted on the float pruned
model (quantisation changes the precision, not the count); bytes are the quantised state_dict's.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn


class PerSampleDynamicLinear(nn.Module):
    """A dynamic int8 Linear applied to each sample (the leading dimension) on its own: the
    activation scale is the sample's, never its batch mates'."""

    def __init__(self, quantized: nn.Module) -> None:
        super().__init__()
        self.quantized = quantized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[0] <= 1:
            return self.quantized(x)
        return torch.cat([self.quantized(x[i:i + 1]) for i in range(x.shape[0])])


def quantize_linear(net: nn.Module) -> nn.Module:
    """int8 dynamic quantisation of every Linear layer of a copy of ``net`` (eval mode), each
    applied per sample (:class:`PerSampleDynamicLinear`)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notices for the quantisation API
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(net).eval(), {nn.Linear}, dtype=torch.qint8)
    if isinstance(q, DynamicLinear):
        return PerSampleDynamicLinear(q)
    for module in list(q.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, DynamicLinear):
                setattr(module, child_name, PerSampleDynamicLinear(child))
    return q.eval()


class QuantizedFamily:
    """A pruning family whose pruned models are then int8-quantised (implements the Family protocol)."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.structure, self.criterion, self.scope = base.structure, base.criterion, base.scope
        self.cost_kind, self.sparsity_of = base.cost_kind, base.sparsity_of
        self.config = {**base.config, "quantize": True}
        self.score_info, self.trajectory_checksum = base.score_info, base.trajectory_checksum

    @property
    def pool_size(self) -> int:
        return self.base.pool_size

    @property
    def parameter_names(self) -> list[str]:
        return self.base.parameter_names

    def sparsity(self, lam: float) -> float:
        return self.base.sparsity(lam)

    def masks(self, lam: float) -> dict[str, torch.Tensor]:
        return self.base.masks(lam)

    def apply(self, params: Mapping[str, torch.Tensor], lam: float) -> dict[str, torch.Tensor]:
        return self.base.apply(params, lam)

    def pruned_model(self, model: nn.Module, lam: float, workspace: nn.Module | None = None) -> nn.Module:
        return quantize_linear(self.base.pruned_model(model, lam))

    def exported_module(self, model: nn.Module, lam: float) -> nn.Module | None:
        return self.base.exported_module(model, lam)

    def export_state(self, model: nn.Module, lam: float) -> dict[str, torch.Tensor]:
        return self.base.export_state(model, lam)

    def export_payload(self, model: nn.Module, lam: float) -> tuple[Any, nn.Module]:
        net = self.pruned_model(model, lam)
        return net.state_dict(), net

    def cost_model(self, model: nn.Module, lam: float) -> nn.Module:
        return self.base.cost_model(model, lam)

    def removal_lambda(self, name: str, lambdas: np.ndarray) -> tuple[np.ndarray, str]:
        return self.base.removal_lambda(name, lambdas)

    def figure_notes(self, lam: float | None) -> list[str]:
        return [*self.base.figure_notes(lam), "Linear layers run in int8 (dynamic quantisation)"]


__all__ = ["PerSampleDynamicLinear", "QuantizedFamily", "quantize_linear"]

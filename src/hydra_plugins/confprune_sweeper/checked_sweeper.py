"""The basic sweeper, checking every job's config and output directory before launching any."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Dict, Optional  # noqa: UP035  (OmegaConf reads these annotations at run time)

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


class CheckedSweeper(BasicSweeper):
    """See :func:`confprune.guard.check_sweep_batch` and :func:`confprune.guard.locked_sweep`."""

    def sweep(self, arguments: list) -> Any:
        from confprune.guard import locked_sweep

        assert self.config is not None
        with locked_sweep(self.config.hydra.sweep.dir):
            return super().sweep(arguments)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from confprune.guard import check_sweep_batch

        assert self.hydra_context is not None and self.config is not None
        first = getattr(self, "_checked", 0)  # jobs of earlier batches come first
        self._checked = first + len(batch)
        check_sweep_batch(self.hydra_context.config_loader, self.config, batch, first)


@dataclass
class CheckedSweeperConf:
    _target_: str = "hydra_plugins.confprune_sweeper.checked_sweeper.CheckedSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(group="hydra/sweeper", name="checked", node=CheckedSweeperConf, provider="confprune")

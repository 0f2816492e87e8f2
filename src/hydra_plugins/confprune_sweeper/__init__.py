"""confprune's Hydra sweeper plugin (``hydra/sweeper=checked``, the default of ``conf/config.yaml``).

Hydra loads sweepers only from the ``hydra_plugins`` namespace package; the logic lives in
:mod:`confprune.guard`.
"""

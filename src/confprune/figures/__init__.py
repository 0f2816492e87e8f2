"""Figures that name what they certify, as PNG + PDF: :mod:`.run` draws one run's,
:mod:`.sweep` aggregates a multirun into a table and draws its figures
(``python -m confprune.figures <sweep dir>``), :mod:`.style` holds what both share. The public
names of all three are re-exported here (``from confprune import figures; figures.collect(...)``).
"""

from .run import (
    TASK_FIGURES,
    first_layer_heatmap,
    lambda_hat_histogram,
    mask_panel,
    risk_bin_edges,
    risk_vs_cost,
    risk_vs_lambda,
    test_risk_histogram,
)
from .style import REMOVED_CMAP, STYLE, RunLabel, save_figure, styled
from .sweep import (
    SERIES_AXES,
    SUMMARY_COLUMNS,
    collect,
    coverage_vs_alpha,
    criteria_comparison,
    lambda_sweep_risk,
    main,
    sparsity_vs_alpha,
    split_sparsity,
    sweep_figures,
    sweep_plots,
    sweep_title,
    test_risk_hist_per_alpha,
)

__all__ = [
    "REMOVED_CMAP",
    "SERIES_AXES",
    "STYLE",
    "SUMMARY_COLUMNS",
    "TASK_FIGURES",
    "RunLabel",
    "collect",
    "coverage_vs_alpha",
    "criteria_comparison",
    "first_layer_heatmap",
    "lambda_hat_histogram",
    "lambda_sweep_risk",
    "main",
    "mask_panel",
    "risk_bin_edges",
    "risk_vs_cost",
    "risk_vs_lambda",
    "save_figure",
    "sparsity_vs_alpha",
    "split_sparsity",
    "styled",
    "sweep_figures",
    "sweep_plots",
    "sweep_title",
    "test_risk_hist_per_alpha",
    "test_risk_histogram",
]

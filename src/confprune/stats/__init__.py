"""Statistical core of confprune: p-values, FWER procedures and Learn-Then-Test (NumPy/SciPy only)."""

from .drop import (
    DROP_METHODS,
    drop_losses,
    drop_pvalues,
    drop_pvalues_from_losses,
    exact_drop_pvalue,
)
from .fwer import (
    FWERS,
    NOT_CERTIFIED,
    Bonferroni,
    FixedSequence,
    FwerProcedure,
    Holm,
    MultiStartFixedSequence,
    certified_index,
    make_fwer,
)
from .ltt import (
    Calibration,
    IidValidation,
    Splits,
    SplitValidation,
    calibrate,
    check_loss_table,
    clopper_pearson,
    draw_iid_calibration,
    draw_splits,
    iid_validation,
    is_binary,
    reject_on_grid,
    split_pvalues,
    validate_splits,
)
from .multirisk import (
    PerClassRisk,
    combine_max,
    min_achievable_pvalue,
    per_class_pvalues,
    risk_pvalues,
)
from .pareto import ParetoResult, ParetoSplits, pareto_front, pareto_test, pareto_test_splits
from .planner import Feasibility, Outcome, SampleSize, expected_outcome, feasibility, required_n
from .pvalues import (
    BINARY_ONLY,
    BOUND_REGISTRY,
    BOUNDS,
    NEEDS_SEQUENCE,
    Bound,
    bentkus_pvalue,
    binomial_pvalue,
    get_bound,
    h1,
    hb_pvalue,
    hoeffding_pvalue,
    max_certified_count,
    pvalues_from_losses,
    pvalues_from_sums,
    resolve_bound,
    wsr_pvalue,
)

__all__ = [
    "DROP_METHODS", "Feasibility", "Outcome", "ParetoResult", "ParetoSplits", "PerClassRisk", "SampleSize",
    "combine_max", "drop_losses", "drop_pvalues", "drop_pvalues_from_losses", "exact_drop_pvalue",
    "expected_outcome", "feasibility", "min_achievable_pvalue", "pareto_front", "pareto_test",
    "pareto_test_splits", "per_class_pvalues", "reject_on_grid", "required_n", "risk_pvalues",
    "BINARY_ONLY", "BOUND_REGISTRY", "BOUNDS", "Bound", "NEEDS_SEQUENCE", "get_bound", "resolve_bound", "FWERS", "NOT_CERTIFIED", "Bonferroni", "Calibration", "FixedSequence", "FwerProcedure",
    "Holm", "IidValidation", "draw_iid_calibration", "iid_validation", "MultiStartFixedSequence", "SplitValidation", "Splits", "bentkus_pvalue",
    "binomial_pvalue", "calibrate", "certified_index", "check_loss_table", "clopper_pearson",
    "draw_splits", "h1", "hb_pvalue", "hoeffding_pvalue", "is_binary", "make_fwer",
    "max_certified_count", "pvalues_from_losses", "pvalues_from_sums", "split_pvalues", "validate_splits", "wsr_pvalue",
]

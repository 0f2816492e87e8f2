"""p-values for the accuracy drop of a pruned model relative to the dense model (paired, on [−1, 1]).

Per calibration point the drop loss is d_i = 1{pruned wrong} − 1{dense wrong} ∈ {−1, 0, +1}; its
mean E[d] = err(pruned) − err(dense) is the accuracy drop. The null H: E[d] > α (α ≥ 0, possibly
tiny or zero) is tested with a p-value that is super-uniform for *any* joint law of the two
models' errors, so the usual LTT machinery (FWER over a λ grid) applies unchanged.

Two methods:

- ``"wsr"``: Waudby-Smith–Ramdas betting on x = (d + 1)/2 ∈ [0, 1] at level α' = (1 + α)/2
  (E[x] > α' ⇔ E[d] > α). Variance-adaptive: powerful when discordance is rare.
- ``"exact"``: an exact unconditional test on the trinomial counts N₊ = #{d = +1},
  N₋ = #{d = −1} with statistic T = N₊ − N₋ and a Berger–Boos restriction of the nuisance
  discordance rate s = p₊ + p₋ (derivation in docs/pareto_testing.md and in
  :func:`exact_drop_pvalue`).

Both reuse the project's p-value core (:func:`confprune.stats.pvalues.wsr_pvalue`); NumPy/SciPy only.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.fft import irfft, next_fast_len
from scipy.special import betaincinv

from .pvalues import wsr_pvalue

DropMethod = Literal["wsr", "exact"]
DROP_METHODS: tuple[str, ...] = ("wsr", "exact")

# Absolute safety margin added to every FFT-computed probability: the FFT agrees with the exact
# D-sum to ~1e-11 at n = 9000 (tested), and the aliased tail mass is < 1e-14 by construction.
_PROB_MARGIN = 1e-10
# Tail mass left outside the FFT window (Bernstein bound), per side.
_WINDOW_TAIL = 1e-14
# Grid points per FFT batch (bounds the memory of one batch to about this × window length).
_FFT_BATCH = 64


def _check_alpha_drop(alpha: float) -> None:
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha for the accuracy drop must lie in [0, 1), got {alpha!r}")


def _check_level(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")


def _as_indicator(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must be boolean or 0/1 valued")
    return arr.astype(np.int8)


def drop_losses(pruned_wrong: np.ndarray, dense_wrong: np.ndarray) -> np.ndarray:
    """Per-sample drop losses d = 1{pruned wrong} − 1{dense wrong}, shape broadcast(...), in {−1, 0, 1}.

    Parameters
    ----------
    pruned_wrong : bool or 0/1 array of shape (..., n), e.g. (G, n) over a λ grid
    dense_wrong : bool or 0/1 array broadcastable to it, typically shape (n,)
    """
    pw = _as_indicator(pruned_wrong, "pruned_wrong")
    dw = _as_indicator(dense_wrong, "dense_wrong")
    return (pw - dw).astype(np.int8)


def drop_counts(drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N₊, N₋) along the last axis of drop losses of shape (..., n); each of shape (...)."""
    d = np.asarray(drop)
    return (d == 1).sum(axis=-1), (d == -1).sum(axis=-1)


# ----------------------------------------------------------------------------------------------
# Exact unconditional test
# ----------------------------------------------------------------------------------------------


def _fisher_length(s: np.ndarray, alpha: float) -> np.ndarray:
    """Λ(s) = √(2(s+α)) + √(2(s−α)) − 2√(1−s): Λ(b) − Λ(a) ≥ ∫_a^b √I(u) du on [α, 1].

    I(s) = 1/(2(s+α)) + 1/(2(s−α)) + 1/(1−s) is the Fisher information of one trinomial draw along
    the null boundary p₊ = (s+α)/2, p₋ = (s−α)/2, p₀ = 1−s; √I ≤ the sum of the three square roots,
    whose antiderivatives are the three terms.
    """
    s = np.asarray(s, dtype=np.float64)
    return (
        np.sqrt(2.0 * (s + alpha))
        + np.sqrt(np.maximum(2.0 * (s - alpha), 0.0))
        - 2.0 * np.sqrt(np.maximum(1.0 - s, 0.0))
    )


def _invert_fisher_length(targets: np.ndarray, lo: float, hi: float, alpha: float) -> np.ndarray:
    """s in [lo, hi] with Λ(s) ≈ target (Λ is increasing); bisection, vectorised."""
    a = np.full(targets.shape, lo)
    b = np.full(targets.shape, hi)
    for _ in range(60):
        mid = 0.5 * (a + b)
        below = _fisher_length(mid, alpha) < targets
        a = np.where(below, mid, a)
        b = np.where(below, b, mid)
    return 0.5 * (a + b)


def _bernstein_halfwidth(n: int, s: np.ndarray, alpha: float) -> np.ndarray:
    """x with P(|T − nα| ≥ x) ≤ 2·_WINDOW_TAIL by Bernstein (|d − E d| ≤ 2, Var d = s − α²)."""
    c = 2.0 * np.log(1.0 / _WINDOW_TAIL)
    var = n * np.maximum(s - alpha * alpha, 0.0)
    lin = 2.0 / 3.0  # Bernstein's (b/3)·x term with b = 2
    return 0.5 * (lin * c + np.sqrt((lin * c) ** 2 + 4.0 * c * var)) + 2.0


def _boundary_cdf(s: np.ndarray, t: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Upper bounds on F(s, t) = P(T ≤ t) on the null boundary, shape (len(s), len(t)).

    T = N₊ − N₋ with (N₊, N₋, N₀) ~ Multinomial(n; (s+α)/2, (s−α)/2, 1−s). The law of T is the
    coefficient list of (p₋ z⁻¹ + p₀ + p₊ z)^n, computed by one inverse FFT per s on a window of
    ±(Bernstein half-width) around the mean nα (mass outside the window aliases into it, which can
    only raise the computed CDF; the mass below the window, ≤ 1e-14, is covered by the margin).
    """
    s = np.asarray(s, dtype=np.float64)
    t = np.asarray(t, dtype=np.int64)
    out = np.empty((s.size, t.size))
    half = _bernstein_halfwidth(n, s, alpha)
    for start in range(0, s.size, _FFT_BATCH):
        sl = slice(start, min(start + _FFT_BATCH, s.size))
        sb = s[sl][:, None]
        width = int(np.ceil(2.0 * half[sl].max())) + 1
        full = width >= 2 * n + 1
        length = next_fast_len(2 * n + 1 if full else width, real=True)
        if full:
            lo = np.full(sb.shape[0], -n, dtype=np.int64)
        else:
            lo = np.floor(n * alpha - half[sl]).astype(np.int64)
        omega = 2.0 * np.pi * np.arange(length // 2 + 1) / length
        # At z = e^{−iω}: p₋/z + p₀ + p₊z = (1 − s(1 − cos ω)) − iα·sin ω; its n-th power in polar
        # form costs a few real operations per frequency (complex ** is ~3x slower).
        re = 1.0 - sb * (1.0 - np.cos(omega))
        im = np.broadcast_to(-alpha * np.sin(omega), re.shape)
        with np.errstate(divide="ignore"):  # |base| = 0 only where the power is exactly 0
            modulus = np.exp(0.5 * n * np.log(re * re + im * im))
        angle = n * np.arctan2(im, re)
        power = modulus * np.cos(angle) + 1j * (modulus * np.sin(angle))
        coeffs = irfft(power, n=length, axis=1)  # coeffs[j] = Σ_{t ≡ j (mod length)} P(T = t)
        # Reorder each row to the window lo, lo+1, …, lo+length−1 and accumulate.
        cols = (lo[:, None] + np.arange(length)[None, :]) % length
        cdf = np.cumsum(np.take_along_axis(coeffs, cols, axis=1), axis=1)
        rel = t[None, :] - lo[:, None]
        inside = np.take_along_axis(cdf, np.clip(rel, 0, length - 1), axis=1)
        block = np.where(rel < 0, 0.0, np.where(rel >= length, 1.0, inside))
        out[sl] = np.clip(block + _PROB_MARGIN, 0.0, 1.0)
    return out


def discordance_upper_bound(discordant: np.ndarray, n: int, gamma: float) -> np.ndarray:
    """One-sided 1−γ Clopper–Pearson upper bound on s = P(d ≠ 0) from D = N₊ + N₋ (any shape)."""
    d = np.asarray(discordant, dtype=np.float64)
    inside = betaincinv(d + 1.0, np.maximum(n - d, 1.0), 1.0 - gamma)
    return np.where(d >= n, 1.0, inside)


def exact_drop_pvalue(
    n_plus: np.ndarray,
    n_minus: np.ndarray,
    n: int,
    alpha: float,
    *,
    gamma: float,
    tolerance: float = 0.002,
) -> np.ndarray:
    """Exact unconditional (Berger–Boos) p-value for H: p₊ − p₋ > α from trinomial counts.

    Parameters
    ----------
    n_plus, n_minus : integer arrays of the same shape (...), e.g. (G, S)
        N₊ = #{pruned wrong, dense right}, N₋ = #{pruned right, dense wrong} among n points.
    n : int, calibration size
    alpha : float in [0, 1), the tolerated accuracy drop
    gamma : float in (0, 1), the error spent on the discordance bound (we use δ/10 by default in
        :func:`drop_pvalues`; **ours**)
    tolerance : float
        Grid resolution, in the arcsine scale of the p-value: the returned p-value is a rigorous
        upper bound of the Berger–Boos p-value and exceeds it by at most ~3·tolerance in
        arcsin(√p) (≈ 1.7% relative at p = 0.05 with the default). Smaller is tighter and slower.

    Returns
    -------
    p : array of shape (...), super-uniform under H for every joint law of the two models' errors.

    Notes
    -----
    T = N₊ − N₋. (1) Reduction to the boundary: lowering p₊ (mass to d = 0) makes T stochastically
    smaller, so over the null the largest P(T ≤ t) is attained on p₊ − p₋ = α, parameterised by
    s = p₊ + p₋ ∈ [α, 1], and lowering p₊ also lowers s. (2) On the boundary P(T ≤ t) grows with s
    in the lower tail (sup = the all-discordant s = 1: useless), so with s_u the one-sided 1−γ
    Clopper–Pearson upper bound on s from D = N₊ + N₋, p = sup_{α ≤ s ≤ s_u} F(s, t_obs) + γ
    (Berger & Boos 1994), and p = γ when s_u < α (no null law is compatible with the bound).
    (3) The sup over a continuum is bounded rigorously from a grid: with φ = arcsin√F,
    |dφ/ds| ≤ √(n·I(s))/2 (score bound: |∂P(A)| ≤ √(P(A)(1−P(A))·Var score)), and
    ∫√I ≤ ΔΛ (:func:`_fisher_length`); between grid points a, b the sup of φ is at most
    (φ(a) + φ(b) + √n·ΔΛ/2)/2. The grid is uniform in Λ with step 4·tolerance/√n, and s_u is
    rounded up to the next grid point (a superset of the restricted null: still valid).
    F itself is exact up to floating point (inverse FFT of the trinomial generating function).
    """
    _check_alpha_drop(alpha)
    _check_level("gamma", gamma)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    n_plus = np.asarray(n_plus)
    n_minus = np.asarray(n_minus)
    if n_plus.shape != n_minus.shape:
        raise ValueError(f"n_plus and n_minus must have the same shape, got {n_plus.shape}, {n_minus.shape}")
    for name, arr in (("n_plus", n_plus), ("n_minus", n_minus)):
        if arr.size and (not np.all(arr == np.rint(arr)) or arr.min() < 0):
            raise ValueError(f"{name} must hold non-negative integer counts")
    n_plus = np.rint(n_plus).astype(np.int64)
    n_minus = np.rint(n_minus).astype(np.int64)
    if n_plus.size and (n_plus + n_minus).max() > n:
        raise ValueError(f"N₊ + N₋ cannot exceed n = {n}")
    shape = n_plus.shape
    t_obs = (n_plus - n_minus).ravel()
    s_upper = discordance_upper_bound((n_plus + n_minus).ravel(), n, gamma)
    p = np.full(t_obs.shape, gamma)  # s_u < α: no null law within the discordance bound
    live = s_upper >= alpha
    if not live.any():
        return np.minimum(p, 1.0).reshape(shape)

    s_max = float(s_upper[live].max())
    lam_lo, lam_hi = float(_fisher_length(alpha, alpha)), float(_fisher_length(s_max, alpha))
    steps = max(1, int(np.ceil((lam_hi - lam_lo) * np.sqrt(n) / (4.0 * tolerance))))
    grid = _invert_fisher_length(np.linspace(lam_lo, lam_hi, steps + 1), alpha, s_max, alpha)
    grid[0], grid[-1] = alpha, s_max
    grid = np.maximum.accumulate(grid)
    lam = _fisher_length(grid, alpha)
    slope = 0.5 * np.sqrt(n)

    # Each observation's sup runs over [α, grid[j]] with j the first grid point ≥ s_u.
    stop = np.searchsorted(grid, s_upper[live], side="left")
    t_values, t_index = np.unique(t_obs[live], return_inverse=True)
    running = np.full(t_values.size, -np.inf)  # sup bound of φ over [α, last grid point done]
    phi_prev = None
    p_live = np.empty(stop.size)
    for start in range(0, grid.size, _FFT_BATCH):
        idx = np.arange(start, min(start + _FFT_BATCH, grid.size))
        phi = np.arcsin(np.sqrt(_boundary_cdf(grid[idx], t_values, n, alpha)))  # (B, T)
        left = np.vstack([phi[:1] if phi_prev is None else phi_prev[None], phi[:-1]])
        gap = np.diff(lam[np.concatenate([[max(idx[0] - 1, 0)], idx])])[:, None]
        # Sup of φ on [grid[k−1], grid[k]] from the two Lipschitz cones (k = 0: the point α).
        cone = np.maximum(0.5 * (left + phi + slope * gap), np.maximum(left, phi))
        bound = np.maximum.accumulate(np.maximum(cone, running[None]), axis=0)  # (B, T)
        ends = (stop >= idx[0]) & (stop <= idx[-1])
        p_live[ends] = np.sin(np.minimum(bound[stop[ends] - idx[0], t_index[ends]], np.pi / 2)) ** 2
        running = bound[-1]
        phi_prev = phi[-1]
    p[live] = p_live + gamma
    return np.minimum(p, 1.0).reshape(shape)


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------


def drop_pvalues_from_losses(
    drop: np.ndarray,
    alpha: float,
    delta: float,
    method: DropMethod = "exact",
    *,
    gamma: float | None = None,
    tolerance: float = 0.002,
    order_seed: int | None = 0,
) -> np.ndarray:
    """p-values for H: E[d] > α from drop losses d ∈ {−1, 0, 1} of shape (..., n).

    Parameters
    ----------
    drop : array of shape (..., n), values in {−1, 0, 1}; last axis = calibration points
    alpha : float in [0, 1)
    delta : float in (0, 1), the LTT error budget (sets WSR's betting fraction and the default γ)
    method : ``"exact"`` (Berger–Boos, :func:`exact_drop_pvalue`) or ``"wsr"``
    gamma : float, ``"exact"`` only; default δ/10 (**ours**: spends a tenth of the budget on the
        nuisance bound, a common Berger–Boos choice between power and the floor p ≥ γ)
    tolerance : float, ``"exact"`` only; see :func:`exact_drop_pvalue`
    order_seed : int or None, ``"wsr"`` only
        The betting order must be random and independent of the data: the calibration axis is
        permuted with this seed (the same permutation for every leading index); ``None`` keeps
        the given order, for callers whose columns are already in a random order.

    Returns
    -------
    p : array of shape (...)
    """
    _check_alpha_drop(alpha)
    _check_level("delta", delta)
    d = np.asarray(drop)
    if d.ndim < 1 or d.shape[-1] < 1:
        raise ValueError(f"drop losses need a non-empty last (calibration) axis, got shape {d.shape}")
    if not np.all((d == -1) | (d == 0) | (d == 1)):
        raise ValueError("drop losses must take values in {-1, 0, 1}")
    n = d.shape[-1]
    if method == "exact":
        n_plus, n_minus = drop_counts(d)
        return exact_drop_pvalue(
            n_plus, n_minus, n, alpha, gamma=delta / 10.0 if gamma is None else gamma,
            tolerance=tolerance,
        )
    if method == "wsr":
        x = (d.astype(np.float64) + 1.0) / 2.0
        if order_seed is not None:
            x = x[..., np.random.default_rng(order_seed).permutation(n)]
        return wsr_pvalue(x, (1.0 + alpha) / 2.0, delta)
    raise ValueError(f"unknown drop method {method!r}; allowed: {', '.join(DROP_METHODS)}")


def drop_pvalues(
    pruned_wrong: np.ndarray,
    dense_wrong: np.ndarray,
    alpha: float,
    delta: float,
    method: DropMethod = "exact",
    *,
    gamma: float | None = None,
    tolerance: float = 0.002,
    order_seed: int | None = 0,
) -> np.ndarray:
    """p-values for H: err(pruned) − err(dense) > α, paired on the same calibration points.

    Parameters
    ----------
    pruned_wrong : bool or 0/1 array of shape (..., n), e.g. (G, n) over the λ grid
    dense_wrong : bool or 0/1 array broadcastable to it, typically (n,)
    alpha, delta, method, gamma, tolerance, order_seed : see :func:`drop_pvalues_from_losses`

    Returns
    -------
    p : array of shape (...), e.g. (G,): feed it to a FWER procedure at level δ.
    """
    return drop_pvalues_from_losses(
        drop_losses(pruned_wrong, dense_wrong), alpha, delta, method,
        gamma=gamma, tolerance=tolerance, order_seed=order_seed,
    )

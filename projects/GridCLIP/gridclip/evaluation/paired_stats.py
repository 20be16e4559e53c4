"""
Paired statistics over seeds: is a row's difference to its reference resolved, or inside the noise?

Two training recipes run with the same seeds share everything the seed fixes (initialisation of the
new layers, data order, augmentation), so the per-seed difference ``row - reference`` cancels much of
the seed noise. Over n seeds with differences d_1..d_n:

    mean = Σ d_i / n,   sd = sqrt(Σ (d_i - mean)² / (n - 1)),
    95 % CI = mean ± t_{0.975, n-1} · sd / sqrt(n)      (Student t, n - 1 degrees of freedom)

The difference is *resolved* when the CI excludes 0 (its sign is known at 95 %), *inside the noise*
otherwise. :func:`seeds_for_half_width` inverts the CI: how many seeds a wanted half-width takes given
a measured sd of the differences. The t quantiles come from a table (no scipy needed): exact to three
decimals for 1-30 degrees of freedom, interpolated in 1/dof above.
"""
import math
from typing import Dict, Mapping, Optional, Sequence

__all__ = ["t_quantile_975", "paired_difference", "seeds_for_half_width", "format_paired_difference"]

# two-sided 95 % (0.975 quantile) of Student's t, dof 1..30
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# beyond the table: (dof, quantile), interpolated linearly in 1/dof down to the normal's 1.960
_T975_TAIL = ((30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980), (math.inf, 1.960))


def t_quantile_975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` (>= 1) degrees of freedom (the 95 % CI factor)."""
    if dof < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom (2 seeds), got {dof}")
    if dof <= len(_T975):
        return _T975[int(dof) - 1]
    for (d0, t0), (d1, t1) in zip(_T975_TAIL, _T975_TAIL[1:]):
        if dof <= d1:
            x0, x1, x = 1 / d0, (0.0 if math.isinf(d1) else 1 / d1), 1 / dof
            return t0 + (t1 - t0) * (x0 - x) / (x0 - x1)
    return 1.960


def paired_difference(values: Mapping, reference: Mapping) -> Dict:
    """
    The paired difference ``values - reference`` over the seeds both have.

    Args:
        values, reference: {seed: value} of the row and of its reference (e.g. AP_r per seed).

    Returns:
        dict: ``seeds`` (sorted common seeds), ``values`` / ``reference`` / ``differences`` (per seed, in
        that order), ``n``, ``mean``, ``sd`` (n - 1 denominator; None for n < 2), ``ci95`` ([low, high];
        None for n < 2), ``half_width``, ``verdict`` ("resolved: row higher", "resolved: row lower",
        "inside the noise", or "one seed: no interval" / "no common seed").
    """
    seeds = sorted(set(values) & set(reference))
    row = [float(values[s]) for s in seeds]
    ref = [float(reference[s]) for s in seeds]
    diffs = [a - b for a, b in zip(row, ref)]
    n = len(diffs)
    result = {"seeds": seeds, "values": row, "reference": ref, "differences": diffs, "n": n,
              "mean": None, "sd": None, "ci95": None, "half_width": None}
    if n == 0:
        result["verdict"] = "no common seed"
        return result
    mean = sum(diffs) / n
    result["mean"] = mean
    if n < 2:
        result["verdict"] = "one seed: no interval"
        return result
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    result.update(sd=sd, ci95=[mean - half, mean + half], half_width=half)
    if mean - half > 0:
        result["verdict"] = "resolved: row higher"
    elif mean + half < 0:
        result["verdict"] = "resolved: row lower"
    else:
        result["verdict"] = "inside the noise"
    return result


def seeds_for_half_width(sd: float, half_width: float = 1.0, max_seeds: int = 10_000) -> int:
    """
    The fewest seeds n (>= 2) whose 95 % CI half-width ``t_{n-1} · sd / sqrt(n)`` is at most
    ``half_width``, given a measured per-seed sd of the paired differences (e.g. sd 3.5 AP_r and
    half-width 1 AP_r: 50 seeds). ValueError when not reached within ``max_seeds``.
    """
    if half_width <= 0:
        raise ValueError(f"half_width must be positive, got {half_width}")
    if sd < 0:
        raise ValueError(f"sd must be >= 0, got {sd}")
    for n in range(2, max_seeds + 1):
        if t_quantile_975(n - 1) * sd / math.sqrt(n) <= half_width:
            return n
    raise ValueError(f"a half-width of {half_width} needs more than {max_seeds} seeds at sd {sd}")


def format_paired_difference(result: Optional[Dict], digits: int = 1) -> str:
    """``+1.2 [-0.8, +3.2] inside the noise`` (or ``+1.2 (1 seed)``, ``-``) for tables."""
    if not result or result["mean"] is None:
        return "-"
    mean = f"{result['mean']:+.{digits}f}"
    if result["ci95"] is None:
        return f"{mean} (1 seed)"
    low, high = result["ci95"]
    return f"{mean} [{low:+.{digits}f}, {high:+.{digits}f}] {result['verdict']}"

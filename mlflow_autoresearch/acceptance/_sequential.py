"""The group-sequential test that decides keep or discard.

The model, on the score's scale: a measurement of code ``c`` in window ``w``
is ``mu_c + drift_w + e`` with ``e ~ N(0, sigma^2)`` between seeds and
``drift_w ~ N(0, drift^2)`` between windows (an evaluation's seeds share a
window; so do the two halves of a confirmation pair).  ``sigma`` and
``drift`` come from the experiment's noise model, learnt from measurements
made *before* this candidate, so they are fixed while it is tested.

The effect ``theta = sign * (mu_candidate - mu_incumbent)`` is estimated by
generalised least squares from everything measured of both codes: the
candidate's own evaluation, the incumbent's every measurement, and the
confirmation pairs.  Where drift is small, the incumbent's history counts
fully; where it is large, the paired seeds carry the estimate (drift cancels
inside a pair).

Look 0 is the *screen* (the candidate's own evaluation against the
incumbent): ``z_0 <= screen_z`` discards at once, a binding futility stop.
Each confirmation pair ``k`` adds a known amount of information, so the
standardised statistics ``z_k`` are a Brownian motion in information time,
and the efficacy boundaries ``c_k = C * t_k ** (Delta - 1/2)`` (Wang-Tsiatis,
``t_k`` the information fraction) have ``C`` solved by a fixed Monte Carlo
sample so that with no true effect the chance of ever crossing, screen
included, is at most ``alpha``.  The interval ``theta_k -/+ c_k * se_k`` is the
one the test inverts: a keep's lower end is above zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import stats

_SIM_PATHS = 100_000
_SHAPE = 0.25  # Wang-Tsiatis Delta: 0 is O'Brien-Fleming (late), 0.5 Pocock (flat)
HISTORY = 40  # the incumbent's most recent measurements used (older ones add little)
SIGMA_FLOOR = 1e-6


@dataclass(frozen=True)
class Design:
    """The settings of one test."""

    alpha: float = 0.05
    max_pairs: int = 6
    min_effect: float = 0.0
    screen_z: float | None = None  # the screen passes z_0 above this; None: 0, or -1 where drift drowns it


@lru_cache(maxsize=256)
def boundary_constant(alpha: float, fractions: tuple[float, ...], screen_z: float) -> float:
    """``C`` such that P(z_0 > screen_z and z_k >= C * t_k^(Delta-1/2) for some k >= 1) = alpha.

    ``fractions``: the information fractions ``t_0 .. t_K`` (``t_K = 1``).
    Deterministic: a fixed sample of Brownian paths.
    """
    rng = np.random.default_rng(20261203)
    t = np.asarray(fractions)
    steps = np.diff(np.concatenate([[0.0], t]))
    s = np.cumsum(rng.standard_normal((_SIM_PATHS, len(t))) * np.sqrt(np.maximum(steps, 1e-12)), axis=1)
    z = s / np.sqrt(t)
    shape = t[1:] ** (_SHAPE - 0.5)
    ratio = (z[:, 1:] / shape).max(axis=1)
    ratio = np.where(z[:, 0] > screen_z, ratio, -np.inf)
    return float(np.quantile(ratio, 1.0 - alpha))


@dataclass(frozen=True)
class Windows:
    """What has been measured of the two codes, on the scale, by window."""

    candidate: tuple[tuple[float, ...], ...]  # the candidate's windows before confirmation (its own evaluation)
    incumbent: tuple[tuple[float, ...], ...]  # the incumbent's windows before confirmation
    pairs: tuple[tuple[float, float], ...] = ()  # (candidate, incumbent) in one window each


def gls(w: Windows, sigma: float, drift: float, sign: int) -> tuple[float, float]:
    """``(theta, se)``: the effect (positive = candidate better) and its standard error.

    With ``drift`` 0 this is the difference of the two means; with large
    drift, the mean paired difference.
    """
    ys: list[float] = []
    code: list[int] = []  # 1 candidate, 0 incumbent
    window: list[int] = []
    wid = 0
    inc = list(w.incumbent)
    kept, count = [], 0
    for vals in reversed(inc):  # the most recent windows first
        if count >= HISTORY:
            break
        kept.append(vals)
        count += len(vals)
    for vals, c in [(v, 1) for v in w.candidate] + [(v, 0) for v in reversed(kept)]:
        for y in vals:
            ys.append(y)
            code.append(c)
            window.append(wid)
        wid += 1
    for ci in w.pairs:
        for y, c in zip(ci, (1, 0), strict=True):
            ys.append(y)
            code.append(c)
            window.append(wid)
        wid += 1
    sigma = max(sigma, SIGMA_FLOOR)  # a deterministic score (sigma 0) is measured exactly, not infinitely well
    y = np.asarray(ys)
    x = np.stack([np.asarray(code, float), 1.0 - np.asarray(code, float)], axis=1)
    zw = np.asarray(window)
    v = sigma**2 * np.eye(len(y)) + drift**2 * (zw[:, None] == zw[None, :])
    vi = np.linalg.inv(v)
    xtv = x.T @ vi
    cov = np.linalg.pinv(xtv @ x)
    beta = cov @ (xtv @ y)
    contrast = np.array([1.0, -1.0]) * sign
    return float(contrast @ beta), float(math.sqrt(max(contrast @ cov @ contrast, 1e-24)))


@dataclass(frozen=True)
class Look:
    """The state of the test after ``k`` confirmation pairs (``k = 0``: the screen)."""

    k: int
    estimate: float  # on the scale, positive = better
    se: float
    z: float
    boundary: float | None  # None at the screen
    low: float
    high: float
    verdict: str  # keep | discard | continue
    why: str

    @property
    def p_value(self) -> float:
        """Nominal one-sided p of ``z`` at this look (the boundary, not 0.05, is what it is held to)."""
        return float(stats.norm.sf(self.z))


@dataclass
class SequentialTest:
    """One candidate's test.  Build it before any confirmation data; :meth:`add` a pair at a time."""

    design: Design
    before: Windows
    sigma: float
    drift: float
    sign: int
    df: int = 1_000  # the degrees of freedom behind sigma: few turn the boundary into a Student's t one
    pairs: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Information at each look depends on the design only (counts, sigma, drift), not on the values.
        dummy = (0.0, 0.0)
        infos = []
        for k in range(self.design.max_pairs + 1):
            _, se = gls(Windows(self.before.candidate, self.before.incumbent, (dummy,) * k), self.sigma,
                        self.drift, self.sign)
            infos.append(1 / se**2)
        self.fractions = tuple(round(i / infos[-1], 3) for i in infos)
        if self.design.screen_z is None:  # a screen drowned in drift lets through all but the clearly worse
            self.design = Design(self.design.alpha, self.design.max_pairs, self.design.min_effect,
                                 0.0 if self.fractions[0] >= 0.2 else -1.0)
        self.constant = boundary_constant(self.design.alpha, self.fractions, self.design.screen_z)

    def boundary(self, k: int) -> float:
        return self.constant * self.fractions[k] ** (_SHAPE - 0.5)

    def update_noise(self, sigma: float, drift: float, df: int) -> None:
        """The noise re-learnt with this confirmation's own pairs in it (the boundaries' shape stays)."""
        self.sigma, self.drift, self.df = sigma, drift, df

    def look(self) -> Look:
        k = len(self.pairs)
        theta, se = gls(Windows(self.before.candidate, self.before.incumbent, tuple(self.pairs)), self.sigma,
                        self.drift, self.sign)
        z = theta / se
        d = self.design
        if k == 0:
            c = self.boundary(1) if d.max_pairs else stats.norm.isf(d.alpha)
            verdict = "discard" if z <= (d.screen_z or 0.0) else "continue"
            why = "screen: " + ("not better than the incumbent" if verdict == "discard" else "worth confirming")
            return Look(0, theta, se, z, None, theta - c * se, theta + c * se, verdict, why)
        c = self.boundary(k)
        if self.df < 1_000:  # sigma estimated from few values: the same tail probability on Student's t
            c = float(stats.t.isf(stats.norm.sf(c), max(self.df, 1)))
        low, high = theta - c * se, theta + c * se
        if z >= c and theta >= d.min_effect:
            verdict, why = "keep", f"z {z:.2f} >= boundary {c:.2f} at pair {k} of {d.max_pairs}"
        elif k >= d.max_pairs:
            verdict = "discard"
            why = (f"z {z:.2f} < boundary {c:.2f} after all {k} pairs" if z < c
                   else f"gain {theta:+.3g} below min_effect {d.min_effect:g} after all {k} pairs")
        elif high < d.min_effect or (2 * k >= d.max_pairs and z < 0):
            verdict, why = "discard", f"futile at pair {k}: estimate {theta:+.3g}, upper bound {high:+.3g}"
        else:
            verdict, why = "continue", f"z {z:.2f} < boundary {c:.2f} at pair {k}"
        return Look(k, theta, se, z, c, low, high, verdict, why)

    def add(self, candidate: float, incumbent: float) -> Look:
        self.pairs.append((candidate, incumbent))
        return self.look()


def split_windows(values: Sequence[float], windows: int) -> tuple[tuple[float, ...], ...]:
    """Values whose windows are unknown, spread over ``windows`` windows in order (first ones together)."""
    windows = max(1, min(windows, len(values)))
    size = len(values) - (windows - 1)
    out = [tuple(values[:size])] + [(v,) for v in values[size:]]
    return tuple(out)


def paired_t(pairs: Sequence[tuple[float, float]], sign: int, alpha: float, min_effect: float) -> Look:
    """The fallback while the noise is not measured yet: a one-sample t-test of the paired differences, once."""
    d = np.asarray([sign * (c - i) for c, i in pairs])
    k = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if k > 1 else math.inf
    se = sd / math.sqrt(k) if k > 1 else math.inf
    crit = float(stats.t.isf(alpha, k - 1)) if k > 1 else math.inf
    t = mean / se if se > 0 else (math.inf if mean > 0 else 0.0)
    keep = t >= crit and mean >= min_effect
    z = float(stats.norm.isf(stats.t.sf(t, k - 1))) if k > 1 and math.isfinite(t) else (8.0 if t > 0 else 0.0)
    return Look(k, mean, se, z, crit, mean - crit * se, mean + crit * se, "keep" if keep else "discard",
                f"paired t {t:.2f} {'>=' if keep else '<'} {crit:.2f} after {k} pairs (noise not measured yet)")

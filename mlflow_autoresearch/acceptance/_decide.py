"""The keep decision: screen, then paired confirmation, as a typed verdict with its evidence.

:class:`Acceptance` knows nothing of MLflow or the evaluator: it is given the
measurements it has and a ``measure`` callable that makes one more (one seed
of the candidate's or of the incumbent's code, on the slot the trial ran on).
The loop, ``autoresearch evaluate`` and the benchmark all call it the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from mlflow_autoresearch.acceptance._noise import NoiseModel, Scale
from mlflow_autoresearch.acceptance._sequential import Design, Look, SequentialTest, Windows, paired_t
from mlflow_autoresearch.outcome import Decision, Direction

CANDIDATE, INCUMBENT = "candidate", "incumbent"
# measure(role, index) -> the score of one fresh seed of that code, or None when that seed failed.
Measure = Callable[[str, int], float | None]


@dataclass(frozen=True)
class Evidence:
    """What a decision rests on; recorded on the run (``autoresearch.evidence``) and in the feedback.

    ``pairs``: the confirmation seeds, ``(candidate, incumbent)`` in score
    units (None where that seed failed).  ``effect``, ``low``, ``high``: on
    the scale, positive = better.  The candidate's own values are its seed
    metrics; the incumbent's earlier ones are in the lineage.
    """

    rule: str  # first | screen | paired | unconfirmed | outcome | baseline
    scale: str = ""
    pairs: tuple[tuple[float | None, float | None], ...] = ()
    effect: float | None = None
    low: float | None = None
    high: float | None = None
    z: float | None = None
    boundary: float | None = None
    p_value: float | None = None
    screen_z: float | None = None
    noise_sigma: float | None = None
    noise_drift: float | None = None
    n_candidate: int = 0
    n_incumbent: int = 0
    incumbent_run: str | None = None
    why: str = ""

    def to_dict(self) -> dict:
        out: dict = {}
        for k, v in asdict(self).items():
            if v in (None, (), "", []):
                continue
            if isinstance(v, float):
                v = round(v, 6) if math.isfinite(v) else None
            elif k == "pairs":
                v = [[None if x is None else round(x, 6) for x in pair] for pair in v]
            out[k] = v
        return out

    @property
    def confirm_runs(self) -> int:
        return sum(1 for pair in self.pairs for x in pair if x is not None)


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str
    evidence: Evidence


@dataclass(frozen=True)
class Sample:
    """The values of one code so far, in score units, by window (an evaluation's seeds; a confirmation seed)."""

    windows: tuple[tuple[float, ...], ...]

    @classmethod
    def of(cls, *values: float) -> Sample:
        """Values measured together, in one window."""
        return cls((tuple(values),))

    @property
    def values(self) -> tuple[float, ...]:
        return tuple(v for w in self.windows for v in w)

    @property
    def n(self) -> int:
        return len(self.values)


def _fmt(values: Sequence[float], scale: Scale) -> str:
    xs = [scale.to(v) for v in values]
    m = sum(xs) / len(xs)
    centre = scale.back(m)
    if len(xs) < 2:
        return f"{centre:.4g}"
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    spread = centre * sd if scale.kind == "relative" else sd
    return f"{centre:.4g} ± {spread:.2g}"


@dataclass
class Acceptance:
    """The policy's keep rule for one experiment.  Stateless between calls; thread-safe."""

    design: Design
    scale: Scale
    goal: str
    unit: str = ""

    @property
    def sign(self) -> int:
        return Direction(self.goal).sign

    def decide(self, candidate: Sample, incumbent: Sample | None, noise: NoiseModel, measure: Measure | None,
               incumbent_run: str | None = None,
               relearn: Callable[[list[float]], NoiseModel] | None = None) -> Verdict:
        """Keep or discard an ``ok`` candidate against the incumbent (None: nothing kept yet).

        ``relearn(diffs)``: the noise model again with this confirmation's paired differences (on the
        scale) pooled in, so that a noise model learnt from little (one load spike) is corrected by the
        pairs themselves.  Without it, the noise model stays as given.
        """
        sc = self.scale

        def change(effect: float) -> str:  # an effect (positive = better) as the change of the score
            return sc.change_text(self.sign * effect)

        def interval(low: float, high: float) -> str:
            a, b = sorted((self.sign * low, self.sign * high))
            return f"[{sc.change_text(a)}, {sc.change_text(b)}]"

        if incumbent is None or incumbent.n == 0:
            return Verdict(Decision.KEEP, "first trial to pass every gate",
                           Evidence("first", sc.kind, n_candidate=candidate.n, why="nothing is kept yet"))
        on = lambda windows: tuple(tuple(sc.to(v) for v in w) for w in windows)  # noqa: E731
        before = Windows(on(candidate.windows), on(incumbent.windows))
        common = dict(scale=sc.kind, incumbent_run=incumbent_run, noise_sigma=noise.sigma, noise_drift=noise.drift,
                      n_candidate=candidate.n, n_incumbent=incumbent.n)
        vs = f"{_fmt(candidate.values, sc)}{self.unit} vs {_fmt(incumbent.values, sc)}{self.unit}"
        test = None
        if noise.sigma is not None:
            test = SequentialTest(self.design, before, noise.sigma, noise.drift or 0.0, self.sign,
                                  df=max(noise.df, 1))
            first = test.look()
            common["screen_z"] = first.z
            if first.verdict == "discard":
                return Verdict(Decision.DISCARD, f"not better: {vs} ({change(first.estimate)}, z = {first.z:.2f})",
                               Evidence("screen", effect=first.estimate, z=first.z, why=first.why, **common))
        if measure is None or self.design.max_pairs == 0:
            return Verdict(Decision.DISCARD, f"unconfirmed: {vs} looks better but could not be re-measured",
                           Evidence("unconfirmed", why="no confirmation seeds", **common))
        pairs: list[tuple[float | None, float | None]] = []
        good: list[tuple[float, float]] = []
        look: Look | None = None
        for k in range(self.design.max_pairs):
            # Alternate the order inside a pair, so a trend within the window cancels too.
            order = (INCUMBENT, CANDIDATE) if k % 2 == 0 else (CANDIDATE, INCUMBENT)
            got = {role: measure(role, k) for role in order}
            pairs.append((got[CANDIDATE], got[INCUMBENT]))
            if got[CANDIDATE] is None:
                return Verdict(Decision.DISCARD, f"a confirmation seed of the candidate failed (pair {k + 1})",
                               Evidence("paired", pairs=tuple(pairs), why="a candidate seed failed", **common))
            if got[INCUMBENT] is None:
                continue  # the incumbent failed a seed: no pair this round
            good.append((sc.to(got[CANDIDATE]), sc.to(got[INCUMBENT])))
            if test is not None:
                if relearn is not None and len(good) >= 2:
                    nm = relearn([self.sign * (c - i) for c, i in good])
                    if nm.sigma is not None:
                        test.update_noise(nm.sigma, nm.drift or 0.0, max(nm.df, 1))
                look = test.add(*good[-1])
                if look.verdict != "continue":
                    break
            elif len(good) >= 2 and sum(self.sign * (c - i) for c, i in good) <= 0:
                break  # futility while the noise is unknown: not better on the pairs so far
        if test is None and len(good) >= 2:
            look = paired_t(good, self.sign, self.design.alpha, self.design.min_effect)
        if look is None:
            return Verdict(Decision.DISCARD, "unconfirmed: the incumbent could not be re-measured often enough",
                           Evidence("paired", pairs=tuple(pairs), why="too few incumbent seeds", **common))
        ev = Evidence("paired", pairs=tuple(pairs), effect=look.estimate, low=look.low, high=look.high, z=look.z,
                      boundary=look.boundary, p_value=look.p_value, why=look.why, **common)
        c_vals = [c for c, i in pairs if c is not None and i is not None]
        i_vals = [i for c, i in pairs if c is not None and i is not None]
        text = (f"{_fmt(c_vals, sc)}{self.unit} vs {_fmt(i_vals, sc)}{self.unit}, {change(look.estimate)} "
                f"{interval(look.low, look.high)}, p = {look.p_value:.2g} over {look.k}+{look.k} paired seeds")
        if look.verdict == "keep":
            return Verdict(Decision.KEEP, f"kept: {text}", ev)
        return Verdict(Decision.DISCARD, f"not confirmed: {text} ({look.why})", ev)

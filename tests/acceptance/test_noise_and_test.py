"""The noise model and the keep rule on hand-made measurements (no MLflow, no evaluator)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlflow_autoresearch.acceptance import Acceptance, NoiseModel, Sample, Scale, default_design, detect_scale
from mlflow_autoresearch.outcome import Decision

REL = Scale("relative")


def noisy(rng: random.Random, true: float, sigma: float, n: int, shift: float = 0.0) -> list[float]:
    return [true * math.exp(shift + sigma * rng.gauss(0, 1)) for _ in range(n)]


def test_scale_is_detected_from_the_score():
    assert detect_scale("train_seconds", [5.7, 8.0]) == "relative"
    assert detect_scale("cpu_seconds") == "relative"
    assert detect_scale("val_bpb", [1.22]) == "absolute"
    assert detect_scale("accuracy") == "absolute"
    assert detect_scale("train_seconds", [0.0]) == "absolute"  # a log needs positive values


def test_noise_is_pooled_from_every_code_and_a_spike_does_not_own_it():
    rng = random.Random(1)
    codes = {f"c{i}": {"w": noisy(rng, 10.0, 0.05, 2)} for i in range(40)}
    quiet = NoiseModel.learn(codes, REL)
    assert quiet.sigma == pytest.approx(0.05, rel=0.3) and quiet.codes == 40 and quiet.values == 80
    # The version-1 margin was the std of the baseline's two seeds: 14.0 and 8.0 s gave 4.24 s (39%).
    spiked = NoiseModel.learn({**codes, "baseline": {"w": [14.0, 8.0]}}, REL)
    assert spiked.sigma < 0.08, "one load spike among 40 quiet evaluations barely moves a median of pairs"
    assert "between seeds of one evaluation" in spiked.describe()


def test_drift_between_windows_is_told_apart_from_seed_noise():
    rng = random.Random(2)
    codes = {}
    for i in range(30):  # each code measured in 3 windows, each window with its own speed of the machine
        codes[f"c{i}"] = {f"w{j}": noisy(rng, 10.0, 0.02, 2, shift=rng.gauss(0, 0.10)) for j in range(3)}
    nm = NoiseModel.learn(codes, REL)
    assert nm.sigma == pytest.approx(0.02, rel=0.35)
    assert nm.drift == pytest.approx(0.10, rel=0.35)


def test_nothing_measured_twice_means_no_noise_yet():
    nm = NoiseModel.learn({"a": {"w": [1.0]}, "b": {"w": [2.0]}}, Scale("absolute"))
    assert nm.sigma is None and nm.drift is None and "not measured yet" in nm.describe()


def acceptance(**kw) -> Acceptance:
    return Acceptance(default_design("relative", **kw), REL, "minimize", " s")


def known_noise(sigma: float = 0.05) -> NoiseModel:
    return NoiseModel(REL, sigma, 0.0, pairs=100, codes=30, values=100, df=30)


def test_the_first_trial_to_pass_is_kept_and_a_worse_one_is_discarded_without_reruns():
    acc = acceptance()
    first = acc.decide(Sample.of(9.0, 9.1), None, known_noise(), measure=None)
    assert first.decision is Decision.KEEP and first.evidence.rule == "first"
    calls = []
    worse = acc.decide(Sample.of(11.0, 11.2), Sample.of(10.0, 10.1), known_noise(),
                       measure=lambda role, k: calls.append(role) or 10.0)
    assert worse.decision is Decision.DISCARD and worse.evidence.rule == "screen" and calls == []
    assert worse.reason.startswith("not better: 11.1") and "+" in worse.reason


def test_a_real_gain_is_kept_with_its_evidence_and_an_interval_above_zero():
    rng = random.Random(3)
    acc = acceptance()
    truth = {"candidate": 8.8, "incumbent": 10.0}  # 12% faster, 2% noise
    verdict = acc.decide(Sample.of(*noisy(rng, 8.8, 0.02, 2)), Sample.of(*noisy(rng, 10.0, 0.02, 2)),
                         known_noise(0.02), measure=lambda role, k: noisy(rng, truth[role], 0.02, 1)[0])
    ev = verdict.evidence
    assert verdict.decision is Decision.KEEP, verdict.reason
    assert ev.rule == "paired" and 1 <= len(ev.pairs) <= 10 and ev.low > 0 and ev.p_value < 0.05
    assert verdict.reason.startswith("kept: ") and "paired seeds" in verdict.reason and "%" in verdict.reason


def test_failed_seeds_discard_a_candidate_and_skip_an_incumbent_pair():
    acc = acceptance()
    out = acc.decide(Sample.of(9.0, 9.1), Sample.of(10.0, 10.1), known_noise(),
                     measure=lambda role, k: None if role == "candidate" else 10.0)
    assert out.decision is Decision.DISCARD and "candidate failed" in out.reason
    out = acc.decide(Sample.of(9.0, 9.1), Sample.of(10.0, 10.1), known_noise(),
                     measure=lambda role, k: None if role == "incumbent" else 9.0)
    assert out.decision is Decision.DISCARD and "could not be re-measured" in out.reason


@pytest.mark.parametrize("noise", [0.01, 0.05, 0.20])
def test_false_keeps_stay_near_the_confidence_when_nothing_is_better(noise):
    rng = random.Random(int(noise * 1000))
    acc = acceptance(max_confirm_seeds=6)
    kept = 0
    runs = 300
    for _ in range(runs):
        v = acc.decide(Sample.of(*noisy(rng, 10.0, noise, 2)),
                       Sample(tuple(tuple(noisy(rng, 10.0, noise, 2)) for _ in range(4))), known_noise(noise),
                       measure=lambda role, k: noisy(rng, 10.0, noise, 1)[0])
        kept += v.decision is Decision.KEEP
    # alpha = 0.05; 300 runs give a standard error of 1.3 points.
    assert kept / runs <= 0.09


values = st.lists(st.floats(min_value=1.0, max_value=100.0), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cand=values, inc=values, later=st.lists(st.one_of(st.none(), st.floats(1.0, 100.0)), min_size=20, max_size=20),
       sigma=st.one_of(st.none(), st.floats(0.0, 0.5)))
def test_every_verdict_is_explained_and_every_keep_excludes_zero(cand, inc, later, sigma):
    acc = acceptance(max_confirm_seeds=5)
    it = iter(later)
    nm = NoiseModel(REL, sigma, 0.0, 10, 5, 10, 5) if sigma is not None else NoiseModel(REL, None, None, 0, 0, 0, 0)
    v = acc.decide(Sample.of(*cand), Sample.of(*inc), nm, measure=lambda role, k: next(it))
    assert v.reason and v.evidence.rule in ("screen", "paired", "unconfirmed")
    assert len(v.evidence.pairs) <= 5
    if v.decision is Decision.KEEP:
        assert v.evidence.low is not None and v.evidence.low > 0, v.reason
        assert v.evidence.effect >= 0.01

"""The MLflow schema every part reads and writes (DESIGN.md)."""

from __future__ import annotations

import re

PREFIX = "autoresearch."

TRIAL = PREFIX + "trial"
PARENT = PREFIX + "parent"
SPECIALIST = PREFIX + "specialist"
HYPOTHESIS = PREFIX + "hypothesis"
EXPECTED = PREFIX + "expected_effect"
OUTCOME = PREFIX + "outcome"
DECISION = PREFIX + "decision"
REASON = PREFIX + "decision_reason"
FEEDBACK = PREFIX + "feedback"
RECIPE = PREFIX + "recipe"
RECIPE_DIR = PREFIX + "recipe_dir"
PROFILE = PREFIX + "profile"
CODE_SHA = PREFIX + "code_sha256"
BACKEND = PREFIX + "backend"
KIND = PREFIX + "kind"  # trial | ledger | sweep_point | summary | confirm
WORKER = PREFIX + "worker"
LEASE = PREFIX + "lease_until"
NEAR_MISS = PREFIX + "near_miss"
SCORE_NAME = PREFIX + "score_metric"
OUTCOME_REASON = PREFIX + "outcome_reason"  # the evaluator's one-line reason for the outcome
FACTS = PREFIX + "facts"  # the evaluator's feedback, before the decision line
EVIDENCE = PREFIX + "evidence"  # compact JSON: what the keep decision rests on (acceptance.Evidence)
DEMOTED = PREFIX + "demoted"  # on a kept trial that did not hold up under re-measurement: why
MEASURES = PREFIX + "measures"  # on a confirmation run: the run id whose code it measured
CONFIRM_ROLE = PREFIX + "confirm_role"  # candidate | incumbent
SEED = PREFIX + "seed"
DEVICE = PREFIX + "device"  # what the trial ran on: "cpu" or "gpu:<CUDA_VISIBLE_DEVICES>" (the evaluator's fact)
NOTE = "mlflow.note.content"
PARENT_RUN = "mlflow.parentRunId"

LEDGER_TAG = PREFIX + "ledger_run"  # experiment tag: run id of the trial-number ledger

# Artifact paths
CODE_DIR = "code"
PATCH = "patch.diff"
LOGS_DIR = "logs"
FEEDBACK_JSON = "feedback.json"
DECISION_JSON = "decision.json"
PROPOSAL_JSON = "proposal.json"
TRANSCRIPT = "agent/transcript.json"

# Metrics the evaluator measures itself; a script can never set them.
EVALUATOR_METRICS = ("train_seconds", "artifact_bytes", "eval_seconds", "total_seconds", "peak_memory_mb", "cpu_seconds")
# Written once, by the policy, after the evaluator has recorded the facts and ended the run.
DECISION_TAGS = (DECISION, REASON, FEEDBACK, EVIDENCE, NOTE)

TAG_LIMIT = 8000  # MLflow truncates longer tag values silently
FEEDBACK_TAG_LIMIT = 1500


def run_name(number: int, specialist: str, hypothesis: str) -> str:
    """``t0042-opt-shorter-warmup`` style: number, role, a slug of the hypothesis."""
    words = re.findall(r"[a-z0-9]+", hypothesis.lower())[:5]
    slug = "-".join(words)[:40].strip("-") or "trial"
    return f"t{number:04d}-{specialist[:12]}-{slug}"


def clip(text: str, limit: int = TAG_LIMIT) -> str:
    """Shorten ``text`` for a tag, saying so, instead of letting MLflow cut it silently."""
    if len(text) <= limit:
        return text
    marker = " …[truncated; full text in artifacts]"
    return text[: limit - len(marker)] + marker

"""The ``autoresearch`` loop: propose, measure, revise, never lose a trial.

Proposals are made in a thread pool (models think while trials train); each
evaluation slot (one per GPU) runs one evaluation at a time; more proposals
are kept in flight than there are slots so that no slot waits on a model.
Everything durable lives in the tracking store: running the same command
again resumes the same experiment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import AutoresearchError, HarnessError, ModelUnavailable, ProposalError, UsageError
from mlflow_autoresearch.evaluator import check_code
from mlflow_autoresearch.lineage import Lineage, LineageStore, MlflowStore, TrialRecord, code_digest, write_snapshot
from mlflow_autoresearch.loop._executor import Evaluations, LeaseKeeper, lease_is_stale, lease_value, new_owner
from mlflow_autoresearch.loop._policy import Choice, Policy
from mlflow_autoresearch.loop._progress import Display, PlainDisplay, Progress, fmt_duration, fmt_score, trial_line
from mlflow_autoresearch.loop._session import close_session_run, mark_session_run
from mlflow_autoresearch.loop._slots import detect_slots, job_slots
from mlflow_autoresearch.outcome import Decision, Direction, Outcome
from mlflow_autoresearch.recipe import Recipe
from mlflow_autoresearch.research import DUPLICATE_OF, Research, parse_arm
from mlflow_autoresearch.research._analyst import analyst_for
from mlflow_autoresearch.settings import Settings, tracking_uri
from mlflow_autoresearch.specialists import (
    Proposal,
    ProposalContext,
    Usage,
    check_backend,
    claude_options,
    make_specialist,
    resolve_agent,
    roster,
)
from mlflow_autoresearch.trial import BASELINE, create_trial, failed_baseline, make_patch, recipe_files

logger = logging.getLogger(__name__)

Echo = Callable[[str], None]
STEERING_TAG = S.PREFIX + "steering"
PAUSE_FIRST, PAUSE_MAX = 30.0, 600.0
MAX_PROPOSAL_FAILURES = 5


@dataclass
class LoopResult:
    stop_reason: str
    trials: int  # trials of this worker that count against --trials (see Loop.counts)
    best: TrialRecord | None
    outcomes: Counter = field(default_factory=Counter)
    dollars: float = 0.0
    wall_seconds: float = 0.0
    slot_busy_seconds: float = 0.0
    slots: int = 1
    interrupted: bool = False  # stopped by SIGINT (Ctrl-C): the command exits 130

    @property
    def utilization(self) -> float:
        return self.slot_busy_seconds / max(self.wall_seconds * self.slots, 1e-9)


def read_steering(settings: Settings, store: LineageStore) -> str:
    """The user's steering note: a file, and/or the experiment tag ``autoresearch.steering``.

    Read fresh for every proposal, so it can change while the loop runs.
    """
    parts = []
    if settings.steering_file:
        try:
            parts.append(Path(settings.steering_file).read_text().strip())
        except OSError:
            pass
    if isinstance(store, MlflowStore):
        try:
            tag = store.client.get_experiment(store.experiment_id).tags.get(STEERING_TAG, "")
        except Exception:  # a flaky read must not block a proposal
            tag = ""
        if tag.strip():
            parts.append(tag.strip())
    return "\n\n".join(p for p in parts if p)


class Loop:
    """One loop process over one experiment.  Build it, then :meth:`run`."""

    def __init__(self, recipe: Recipe, settings: Settings, *, store: LineageStore | None = None,
                 specialist=None, echo: Echo | None = None, display: Display | None = None,
                 verbose: bool = False) -> None:
        self.recipe, self.settings = recipe, settings
        if settings.backend not in ("local", "slurm") and not settings.project and not settings.in_process:
            raise UsageError(f"--backend {settings.backend} needs --project: an MLflow project whose `evaluate` entry "
                             "point runs in that backend (for kubernetes, one with docker_env, e.g. docs/cluster)")
        self.echo = echo or (lambda m: logger.info("%s", m))
        self.display = display or PlainDisplay(self.echo)
        self.uri = tracking_uri(settings.tracking_uri)
        arm = parse_arm(settings.arm)
        self.store = store or MlflowStore(settings.experiment or arm.experiment(recipe.name), self.uri)
        if hasattr(self.store, "check_write_access"):
            self.store.check_write_access()  # a reader is refused before any trial starts
        self.agent = resolve_agent(settings.agent, provider=settings.provider, base_url=settings.anthropic_base_url) \
            if specialist is None else getattr(specialist, "backend", "custom")
        self.specialist = specialist or make_specialist(self.agent, **_backend_options(settings, self.agent))
        # A cluster backend's slots are jobs at once (--slots), not this machine's GPUs.
        self.slots = detect_slots(settings.slots) if settings.backend == "local" or settings.in_process \
            else job_slots(settings.slots)
        self.owner = new_owner()
        self.research = Research(recipe, self.store, arm=arm, lessons_every=settings.lessons_every,
                                 lessons_from=tuple(settings.lessons_from),
                                 analyst=analyst_for(self.agent, self.specialist), owner=self.owner,
                                 seed=settings.seed, echo=self.echo, on_usage=self._on_usage)
        self.roles = self.research.roles(roster(recipe))
        self.policy = Policy(self.roles, settings.seed)
        self.leases = LeaseKeeper(self.store, self.owner, settings.lease_seconds)
        self.evaluations = Evaluations(
            self.store, recipe, tracking_uri=self.uri, experiment_id=getattr(self.store, "experiment_id", None),
            in_process=settings.in_process or not isinstance(self.store, MlflowStore), backend=settings.backend,
            backend_config=settings.backend_config, leases=self.leases, project_uri=settings.project,
            quiet=not verbose)
        self.progress = Progress(total=settings.trials, slots=len(self.slots), direction=Direction(recipe.metric.goal),
                                 counts=self.counts)
        self._signal: int | None = None
        self._stop: str | None = None
        self._lock = threading.Lock()
        self._dollars = 0.0
        self._code_cache: dict[str, dict[str, bytes]] = {}
        self._latest: Lineage | None = None  # the last snapshot loaded (progress lines reuse it)
        self._outcomes: Counter = Counter()
        self._busy = 0.0
        self._paused_until = 0.0
        self._pause = PAUSE_FIRST
        self._failures = 0
        self._fatal: UsageError | None = None  # a backend refusal that stopped the loop; raised at the end

    # ----- budget -----------------------------------------------------------
    def counts(self, t: TrialRecord) -> bool:
        """Whether ``t`` counts against ``--trials``: a trial of this worker, not the baseline, not a
        harness error (its retry counts instead), not a refused duplicate."""
        return (t.worker == self.settings.worker and t.specialist != BASELINE
                and t.outcome is not Outcome.HARNESS_ERROR and DUPLICATE_OF not in t.tags)

    def _mine(self, lineage: Lineage) -> list[TrialRecord]:
        return [t for t in lineage.trials if self.counts(t)]

    def _budget_reason(self, created: int, start: float) -> str | None:
        s = self.settings
        if self._stop:
            return self._stop
        if (dup := self.research.stop_reason()) is not None:
            return dup
        if created >= s.trials:
            return f"trial budget reached ({s.trials} trials)"
        if s.wall_seconds and time.monotonic() - start >= s.wall_seconds:
            return f"wall-clock budget reached ({s.wall_seconds:g} s)"
        if s.dollars and self._dollars >= s.dollars:
            return f"dollar budget reached (${self._dollars:.2f} of ${s.dollars:.2f})"
        return None

    def _on_usage(self, usage: Usage) -> None:
        with self._lock:
            self._dollars += usage.cost_usd
            self.progress.dollars = self._dollars

    # ----- pieces -----------------------------------------------------------
    def lineage(self) -> Lineage:
        self._latest = Lineage.load(self.store, self.recipe.metric.goal)
        self.progress.observe(self._latest)
        return self._latest

    def _code(self, run_id: str) -> dict[str, bytes]:
        with self._lock:
            cached = self._code_cache.get(run_id)
        if cached is None:
            cached = self.store.code(run_id)
            with self._lock:
                if len(self._code_cache) > 256:
                    self._code_cache.clear()
                self._code_cache[run_id] = cached
        return cached

    def _ensure_baseline(self) -> TrialRecord:
        """The experiment's baseline, scored here when there is none.

        Raises:
            BaselineFailed: it did not pass, and the settings do not allow a failed baseline.
        """
        base = self._baseline()
        if base.outcome is not Outcome.OK:
            if not self.settings.allow_failed_baseline:
                raise failed_baseline(self.store, base, recorded=base.decision != Decision.BASELINE.value)
            self.echo(f"warning: the baseline itself is {base.outcome.value if base.outcome else base.status}: "
                      f"{base.tags.get(S.OUTCOME_REASON, '')}. Specialists will try to repair it.")
        return base

    def _baseline(self) -> TrialRecord:
        lineage = self.lineage()
        base = lineage.baseline
        if base is not None and base.finished:
            return base
        if base is not None and base.measured and lease_is_stale(base) and self._take_over(base):
            return self._evaluate(base, self.slots[0])  # a loop stopped between its facts and its decision
        if (resumed := self._resume_baseline(base)) is not None:
            return resumed
        # A failed baseline that was discarded is followed by a fresh one: one claim per attempt.
        failed = [t for t in lineage.trials if t.specialist == BASELINE and t.decision == Decision.DISCARD.value]
        key = f"baseline/after/{failed[-1].run_id}" if failed else "baseline"
        if base is None and self.store.claim(key, self.owner):
            self.echo("baseline: scoring the recipe's own code "
                      f"({self.recipe.seeds} seed(s); this also measures the noise floor)")
            trial = create_trial(self.store, self.recipe, recipe_files(self.recipe), specialist=BASELINE,
                                 hypothesis="baseline: the recipe's own code", backend="none",
                                 worker=self.settings.worker, profile=self.settings.profile,
                                 tags={S.LEASE: lease_value(self.owner, self.settings.lease_seconds)})
            base = self._evaluate(trial, self.slots[0])
            self._report_trial(base, lineage)
            return base
        self.echo("waiting for the baseline another loop is scoring …")
        while True:  # another loop holds the baseline claim
            time.sleep(2)
            lineage = self.lineage()
            base = lineage.baseline
            if base is not None and base.finished:
                return base
            ended = [t for t in lineage.trials if t.specialist == BASELINE and t.decision == Decision.DISCARD.value]
            if len(ended) > len(failed):  # that loop's baseline did not pass
                return ended[-1]
            if (resumed := self._resume_baseline(base)) is not None:
                return resumed
            if self._stop:
                raise AutoresearchError("stopped while waiting for the baseline")

    def _resume_baseline(self, base: TrialRecord | None) -> TrialRecord | None:
        """A baseline a stopped loop left without facts: wait on its job if one still runs, else evaluate it."""
        if base is None or base.measured or base.status != "RUNNING":
            return None
        job = self.evaluations.adopt(base)
        if job is None and not (lease_is_stale(base) and self._take_over(base)):
            return None
        self.echo(f"baseline: left unfinished by a stopped loop; {'waiting for ' + job if job else 'evaluating it'}")
        return self._evaluate(base, self.slots[0])

    def _stale_trials(self, lineage: Lineage) -> list[TrialRecord]:
        return [t for t in lineage.trials if t.status == "RUNNING" and t.outcome is None
                and t.worker == self.settings.worker and lease_is_stale(t)]

    def _take_over(self, t: TrialRecord) -> bool:
        """One loop takes over a given stale lease: the claim key names the lease it replaces."""
        lease = hashlib.sha256(t.tags.get(S.LEASE, "").encode()).hexdigest()[:16]
        return self.store.claim(f"takeover/{t.run_id}/{lease}", self.owner)

    def _context(self, choice: Choice, lineage: Lineage) -> ProposalContext:
        return ProposalContext(
            recipe=self.recipe, role=choice.role, parent=choice.parent, parent_files=self._code(choice.parent.run_id),
            lineage=self.research.view(lineage, choice.parent), store=self.store,
            steering=read_steering(self.settings, self.store), saturation=self.research.saturation(choice.saturation),
            rng_seed=self.research.rng_seed(), on_usage=self._on_usage, lessons=self.research.lessons())

    def _propose(self, choice: Choice, lineage: Lineage) -> TrialRecord:
        """Runs in a proposer thread: ask the specialist, check, record the trial."""
        ctx = self._context(choice, lineage)
        try:
            proposal = self.specialist.propose(ctx)
        except ProposalError as e:  # recorded, so a specialist that keeps failing cannot spin the loop
            proposal = Proposal(specialist=choice.role.name, hypothesis="", files=ctx.parent_files,
                                backend=getattr(self.specialist, "backend", "?"), invalid_reason=str(e))
        if self.agent != "claude":  # the Claude backend reports usage through ctx.on_usage itself
            self._on_usage(proposal.usage)
        if self._stop:
            raise _Abandoned()
        reason, outcome = proposal.invalid_reason, Outcome.INVALID_PROPOSAL
        files = dict(proposal.files) if proposal.files else dict(ctx.parent_files)
        extra = {S.PREFIX + "choice": choice.why, **self.research.trial_tags(files)}
        if reason is None:
            fresh = self.lineage()
            digest = code_digest(files)
            # Same code, or the same change in effect: refused before evaluation, naming the earlier trial,
            # without using up the budget (see mlflow_autoresearch.research._dedup).
            dup = self.research.duplicate(fresh, files, choice.parent, proposal.hypothesis,
                                          make_patch(ctx.parent_files, files))
            if dup is not None:
                twin, reason = dup
                extra[DUPLICATE_OF] = twin.run_id if twin is not None else "in-flight"
            elif not self.store.claim(f"code/{digest}", uuid.uuid4().hex):
                # Two proposals in flight reached the same code: the claim lets exactly one run it.
                reason = "duplicate: another proposal in flight submitted this exact code"
                extra[DUPLICATE_OF] = "in-flight"
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    write_snapshot(files, Path(tmp))
                    pre = check_code(self.recipe, Path(tmp))
                if pre is not None:
                    outcome, reason = pre
        artifacts = {S.PROPOSAL_JSON: json.dumps({
            "specialist": proposal.specialist, "hypothesis": proposal.hypothesis,
            "expected_effect": proposal.expected_effect, "parent": choice.parent.run_id, "choice": choice.why,
            "edits": [e.__dict__ for e in proposal.edits],
            "knobs": [k.model_dump() for k in proposal.knobs], "invalid_reason": proposal.invalid_reason,
        }, indent=2)}
        if proposal.transcript:
            artifacts[S.TRANSCRIPT] = proposal.transcript
        trial = create_trial(
            self.store, self.recipe, files, specialist=choice.role.name,
            hypothesis=proposal.hypothesis or f"({choice.role.name} made no valid proposal)",
            parent=choice.parent, parent_files=ctx.parent_files, expected_effect=proposal.expected_effect,
            backend=proposal.backend, worker=self.settings.worker, profile=self.settings.profile,
            tags={**extra, S.LEASE: lease_value(self.owner, self.settings.lease_seconds)},
            artifacts=artifacts, metrics=proposal.usage.metrics())
        if getattr(proposal, "trace_id", None):
            from mlflow_autoresearch.specialists import link_trace

            link_trace(proposal.trace_id, trial.run_id)
        if reason is not None:
            return self._refuse(trial, outcome, reason)
        return trial

    def _refuse(self, trial: TrialRecord, outcome: Outcome, reason: str) -> TrialRecord:
        """Record a proposal that failed the cheap checks, without running it."""
        feedback = f"outcome: {outcome.value} — {reason}\n(not run: the proposal failed the checks before evaluation)"
        return self.store.record_result(trial.run_id, tags={
            S.OUTCOME: outcome.value, S.DECISION: Decision.DISCARD.value, S.REASON: S.clip(reason, 1000),
            S.FEEDBACK: S.clip(feedback, S.FEEDBACK_TAG_LIMIT), S.NEAR_MISS: "false", S.SCORE_NAME: self.recipe.metric.name,
            S.NOTE: f"### {trial.name}\n**Hypothesis:** {trial.hypothesis}  \n**Outcome:** `{outcome.value}`\n\n{reason}",
        }, metrics={}, artifacts={S.FEEDBACK_JSON: json.dumps({"outcome": outcome.value, "reason": reason})})

    def _evaluate(self, trial: TrialRecord, gpu: str | None) -> TrialRecord:
        """On a slot: the evaluator's facts (unless already recorded), then the policy's decision."""
        t0 = time.monotonic()
        self.progress.busy(+1)
        try:
            record = trial if trial.measured else self.evaluations.run(trial, gpu)
            if record.decision is not None:
                return record
            self.leases.hold(record.run_id)  # confirmation seeds run on this slot, under this loop's lease
            try:
                return self.policy.decide(self.store, self.recipe, record, self.evaluations.measurer(gpu), self.echo,
                                          allow_failed_baseline=self.settings.allow_failed_baseline)
            finally:
                self.leases.release(record.run_id)
        finally:
            self.progress.busy(-1)
            with self._lock:
                self._busy += time.monotonic() - t0

    def _retry_harness_error(self, failed: TrialRecord) -> TrialRecord | None:
        if failed.tags.get(S.PREFIX + "retry_of"):
            return None
        parent = self.store.get(failed.parent_id) if failed.parent_id else None
        return create_trial(self.store, self.recipe, self._code(failed.run_id), specialist=failed.specialist,
                            hypothesis=failed.hypothesis, parent=parent, backend=failed.backend,
                            worker=self.settings.worker, profile=self.settings.profile,
                            tags={S.PREFIX + "retry_of": failed.run_id,
                                  S.LEASE: lease_value(self.owner, self.settings.lease_seconds)})

    # ----- progress ---------------------------------------------------------
    def _report_trial(self, t: TrialRecord, lineage: Lineage | None = None) -> None:
        self._outcomes[t.outcome.value if t.outcome else "?"] += 1
        new_best = self.progress.finished(t)
        # The latest snapshot, not a new sync: this runs on the thread that hands free slots their next trial.
        # The status line's best does not depend on it (Progress merges the trials reported since).
        self.research.after_trial(lineage or self._latest or self.lineage())
        self.display.trial(trial_line(t, new_best=new_best and t.decision != BASELINE, counted=self.counts(t),
                                      width=self.display.width), self._status_line)

    def _status_line(self) -> str:
        return self.progress.status(self.settings.wall_seconds).line(self.display.width)

    # ----- the loop ---------------------------------------------------------
    def run(self) -> LoopResult:
        start = time.monotonic()
        self.progress.start = start
        old = self._install_signals()
        backend_note = {"offline": "offline specialists (deterministic playbook; no ANTHROPIC_API_KEY set)"
                        if self.settings.agent == "auto" else "offline specialists (deterministic playbook)",
                        "claude": f"Claude specialists ({self.settings.model})"}.get(self.agent, self.agent)
        self.echo(f"autoresearch: recipe {self.recipe.name}, experiment {self.store.experiment_name!r} at {self.uri}")
        client = getattr(self.store, "client", None)
        session = mark_session_run(client, self.store.experiment_name, getattr(self.store, "experiment_id", ""),
                                   self.recipe.name, self.settings.worker) if client is not None else None
        self.echo(f"autoresearch: {backend_note}; {len(self.slots)} slot(s); worker {self.settings.worker!r}")
        try:
            if callable(getattr(self.specialist, "check", None)):  # endpoint and credentials, before the baseline
                self.echo(f"autoresearch: model API: {check_backend(self.settings, self.specialist)}")
            self.display.start(self._status_line)
            self._ensure_baseline()
            reason = self._main(start)
        finally:
            self.evaluations.cancel_all()  # nothing is left queued or running when the loop leaves
            self.leases.close()
            self.research.close()
            self._restore_signals(old)
            self.display.close()
        lineage = self.lineage()
        result = LoopResult(stop_reason=reason, trials=len(self._mine(lineage)), best=lineage.best,
                            outcomes=self._outcomes, dollars=self._dollars, wall_seconds=time.monotonic() - start,
                            slot_busy_seconds=self._busy, slots=len(self.slots),
                            interrupted=self._signal == signal.SIGINT)
        best = result.best
        self.echo(f"autoresearch: stopped: {reason}.")
        self.echo(f"autoresearch: {result.trials}/{self.settings.trials} trials by worker {self.settings.worker!r}; "
                  f"best {best.short + ' ' + fmt_score(best.score) if best and best.score is not None else '—'}; "
                  f"{fmt_duration(result.wall_seconds)}; slots {result.utilization:.0%} busy; "
                  f"${result.dollars:.2f} spent")
        self._log_report()
        close_session_run(client, session, result)
        if self._fatal is not None:
            raise self._fatal
        return result

    def _main(self, start: float) -> str:
        lineage = self.lineage()
        created = len(self._mine(lineage))
        ready: deque[TrialRecord] = deque()
        waiting: set[str] = set()  # RUNNING trials another live process is evaluating
        for t in [t for t in lineage.trials if t.worker == self.settings.worker and t.specialist != BASELINE
                  and ((t.status == "RUNNING" and t.outcome is None) or (t.measured and t.decision is None))]:
            if t.outcome is None and (job := self.evaluations.adopt(t)):  # still a job on the cluster: wait for it
                self.echo(f"resume: {t.short} is still {job}; waiting for it on a slot")
                ready.append(t)
            elif lease_is_stale(t) and self._take_over(t):
                self.echo(f"resume: {t.short} was left running by a stopped loop; evaluating it again")
                ready.append(t)
            else:
                waiting.add(t.run_id)
        if waiting:
            self.echo(f"resume: waiting for {len(waiting)} trial(s) still being evaluated by another process")
        free = list(self.slots)
        ahead = len(self.slots) + self.settings.proposals_ahead
        with ThreadPoolExecutor(ahead, thread_name_prefix="propose") as proposers, \
                ThreadPoolExecutor(len(self.slots), thread_name_prefix="slot") as slots:
            proposing: dict[Future, Choice] = {}
            evaluating: dict[Future, tuple[str | None, TrialRecord]] = {}
            sweeping: dict[Future, tuple[str | None, TrialRecord]] = {}
            stop_reason = None
            last_poll = 0.0
            while True:
                stop_reason = self._budget_reason(created + len(proposing) + len(sweeping), start)
                paused = time.monotonic() < self._paused_until
                # Free slots first: a slot must not wait while new proposals are chosen.
                while ready and free and not self._stop:
                    gpu = free.pop(0)
                    trial = ready.popleft()
                    evaluating[slots.submit(self._evaluate, trial, gpu)] = (gpu, trial)
                lineage = None  # one sync serves every proposal chosen in this round
                while (stop_reason is None and not paused and len(proposing) + len(ready) < ahead):
                    lineage = lineage or self.lineage()
                    choice = self.policy.choose(lineage)
                    proposing[proposers.submit(self._propose, choice, lineage)] = choice
                    stop_reason = self._budget_reason(created + len(proposing) + len(sweeping), start)
                if waiting and time.monotonic() - last_poll > 2:
                    last_poll = time.monotonic()
                    for run_id in list(waiting):
                        t = self.store.get(run_id)
                        if t.decision is not None or (lease_is_stale(t) and self._take_over(t)):
                            waiting.discard(run_id)
                            if t.decision is None:
                                ready.append(t)
                idle = not proposing and not evaluating and not sweeping and (not ready or self._stop)
                if idle and (stop_reason or self._stop) and (not waiting or self._stop):
                    if waiting:
                        self.echo(f"{len(waiting)} trial(s) are still being evaluated by another process; "
                                  "they finish on their own")
                    return stop_reason or self._stop or "done"
                if not proposing and not evaluating and not sweeping:
                    time.sleep(0.5)  # only waiting on other processes' trials, or paused
                    continue
                done, _ = wait([*proposing, *evaluating, *sweeping], timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut in proposing:
                        choice = proposing.pop(fut)
                        trial = self._proposal_done(fut, choice)
                        if trial is None:
                            continue
                        if not self.research.refused(trial):
                            created += 1
                        if trial.outcome is None:
                            ready.append(trial)
                        else:
                            self._report_trial(trial)
                    elif fut in sweeping:
                        gpu, swept = sweeping.pop(fut)
                        free.append(gpu)
                        record = self._sweep_done(fut, swept)
                        if record is not None:
                            created += 1
                            self._report_trial(record)
                    else:
                        gpu, trial = evaluating.pop(fut)
                        record = self._evaluation_done(fut, trial)
                        if record is not None and self._wants_sweep(record, created + len(proposing) + len(sweeping)):
                            sweeping[slots.submit(self._sweep, record, gpu)] = (gpu, record)  # the slot stays busy
                        else:
                            free.append(gpu)
                        if record is None:
                            continue
                        if record.outcome is Outcome.HARNESS_ERROR:
                            retry = self._retry_harness_error(record)
                            if retry is not None:
                                self.echo(f"{trial.short}: harness error, not the trial's fault; retrying as {retry.short}")
                                ready.append(retry)
                        self._report_trial(record)
                        self._pause = PAUSE_FIRST

    def _proposal_done(self, fut: Future, choice: Choice) -> TrialRecord | None:
        try:
            trial = fut.result()
            self._failures = 0
            return trial
        except _Abandoned:
            return None
        except ModelUnavailable as e:
            self._paused_until = time.monotonic() + self._pause
            self.echo(f"paused: the model API is unavailable ({e}); retrying in {self._pause:.0f} s. "
                      "Evaluations in flight continue.")
            self._pause = min(self._pause * 2, PAUSE_MAX)
            return None
        except UsageError as e:  # bad credentials, billing, unknown model: retrying cannot help
            self._fatal = self._fatal or e
            self._stop = f"the specialist backend refused to work: {e}"
            self.echo(f"autoresearch: {self._stop}")
            return None
        except AutoresearchError as e:
            self._failures += 1
            self.echo(f"proposal by {choice.role.name} failed: {e}")
            if self._failures >= MAX_PROPOSAL_FAILURES:
                self._stop = f"{self._failures} proposals failed in a row; last: {e}"
            return None

    def _evaluation_done(self, fut: Future, trial: TrialRecord) -> TrialRecord | None:
        try:
            return fut.result()
        except HarnessError as e:
            self.echo(f"{trial.short}: harness error: {e}")
            try:
                record = self.store.get(trial.run_id)
            except AutoresearchError:
                return None
            return record if record.outcome is not None else None
        except AutoresearchError as e:
            self.echo(f"{trial.short}: evaluation could not be recorded: {e}; it will be re-evaluated on resume")
            return None

    # ----- sweeps -----------------------------------------------------------
    def _wants_sweep(self, record: TrialRecord, committed: int) -> bool:
        return (self.settings.sweep_points > 0 and record.decision == Decision.KEEP.value and not self._stop
                and committed < self.settings.trials and isinstance(self.store, MlflowStore))

    def _sweep(self, record: TrialRecord, gpu: str | None):
        from mlflow_autoresearch.sweep import run_sweep

        self.echo(f"sweep: {self.settings.sweep_points} Optuna points over the knobs of {record.short}")
        t0 = time.monotonic()
        self.progress.busy(+1)
        try:
            return run_sweep(self.store, self.recipe, record.run_id, points=self.settings.sweep_points,
                             storage=self.settings.sweep_storage, sampler=self.settings.sweep_sampler,
                             seed=self.settings.seed, worker=self.settings.worker,
                             extra_env={"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else None)
        finally:
            self.progress.busy(-1)
            with self._lock:
                self._busy += time.monotonic() - t0

    def _sweep_done(self, fut: Future, swept: TrialRecord) -> TrialRecord | None:
        try:
            result = fut.result()
        except AutoresearchError as e:  # nothing to sweep, or the sweep failed: the loop goes on
            self.echo(f"sweep of {swept.short}: {e}")
            return None
        if result.trial is None:
            self.echo(f"sweep of {swept.short}: {result.reason}")
        return result.trial

    def _log_report(self) -> None:
        try:
            from mlflow_autoresearch.report import log_report
        except ImportError:
            return
        try:
            log_report(self.store, self.recipe)
        except Exception as e:  # the report is a convenience; the trials are already safe
            self.echo(f"report: could not be logged: {e}")

    # ----- signals ----------------------------------------------------------
    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop:
                raise KeyboardInterrupt
            self._stop = f"stopped by {signal.Signals(signum).name}"
            self._signal = signum
            self.echo(f"autoresearch: {self._stop}: finishing cleanly (again to abort); "
                      "the same command resumes the experiment")
            self.evaluations.cancel_all()

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(old) -> None:
        for s, h in (old or {}).items():
            signal.signal(s, h)


def _backend_options(settings: Settings, agent: str) -> dict:
    claude = claude_options(settings)
    if agent == "claude":
        return claude
    if agent == "offline":
        return {"seed": settings.seed}
    return {"seed": settings.seed, **claude}  # a plug-in takes what it needs


class _Abandoned(Exception):
    """A proposal that finished after the loop was told to stop."""


def run_loop(recipe: Recipe, settings: Settings, *, echo: Echo | None = None, store: LineageStore | None = None,
             specialist=None, display: Display | None = None, verbose: bool = False) -> LoopResult:
    """Run the loop to one of its budgets; see :class:`Loop`."""
    return Loop(recipe, settings, store=store, specialist=specialist, echo=echo, display=display,
                verbose=verbose).run()

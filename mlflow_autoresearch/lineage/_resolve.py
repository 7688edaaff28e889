"""One trial id for every command: ``t0007``, a full run id, or a unique run-id prefix (6+ hex digits).

:func:`match_trial` picks a trial out of records in memory (a loaded lineage);
:func:`resolve_trial` finds it in a tracking store, in one experiment or in all
of them.  Both raise :class:`UsageError` (exit 2) for an id that names no
trial or more than one, naming the candidates; neither creates a store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.lineage._record import TrialRecord

if TYPE_CHECKING:
    from mlflow_autoresearch.lineage._mlflow import MlflowStore

MIN_PREFIX = 6
SHORT_ID = 8  # run-id characters shown beside a trial number in views
FORMS = f"t0007 (a trial number), a run id, or a unique prefix of one ({MIN_PREFIX}+ hex digits)"
_NUMBER = re.compile(r"[tT#](\d{1,9})|(\d{1,5})")
_HEX = re.compile(rf"[0-9a-f]{{{MIN_PREFIX},32}}")
_SHOWN = 5  # candidates named in an ambiguity error


@dataclass(frozen=True)
class TrialRef:
    """A parsed trial id: a trial number, or a run id (``full``) or a prefix of one."""

    text: str
    number: int | None = None
    prefix: str | None = None

    @property
    def full(self) -> bool:
        return self.prefix is not None and len(self.prefix) == 32


def parse_ref(ref: str, option: str = "--trial") -> TrialRef:
    """Parse ``ref``; raises UsageError naming the accepted forms."""
    text = (ref or "").strip()
    m = _NUMBER.fullmatch(text)
    if m:
        return TrialRef(text, number=int(m.group(1) or m.group(2)))
    low = text.lower()
    if _HEX.fullmatch(low):
        return TrialRef(text, prefix=low)
    if re.fullmatch(r"[0-9a-fA-F]{1,5}", text):
        raise UsageError(f"{option} {ref!r}: a run-id prefix needs at least {MIN_PREFIX} characters; use {FORMS}")
    raise UsageError(f"{option} {ref!r}: not a trial id; use {FORMS}")


def describe(t: TrialRecord, experiment: str | None = None) -> str:
    where = f" in experiment {experiment!r}" if experiment else ""
    return f"{t.short} ({t.run_id}){where}"


def _one(found: list[tuple[TrialRecord, str | None]], ref: TrialRef, option: str, where: str) -> TrialRecord:
    if not found:
        hint = " (a trial number is looked up in one experiment: add --experiment or --recipe)" \
            if ref.number is not None and "experiment" not in where else ""
        raise UsageError(f"{option} {ref.text}: no trial with that id {where}{hint}")
    if len(found) > 1:
        names = "; ".join(describe(t, e) for t, e in found[:_SHOWN])
        more = f"; and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
        fix = "add --experiment (or --recipe)" if ref.number is not None else "give more of the run id"
        raise UsageError(f"{option} {ref.text}: {len(found)} trials match {where}: {names}{more}; {fix}")
    return found[0][0]


def match_trial(trials: Iterable[TrialRecord], ref: str, *, option: str = "--trial",
                where: str = "in this lineage") -> TrialRecord:
    """The one trial among ``trials`` that ``ref`` names; raises UsageError for none or several."""
    parsed = parse_ref(ref, option)
    pool = list(trials)
    if parsed.number is not None:
        found = [t for t in pool if t.number == parsed.number]
    else:
        found = [t for t in pool if t.run_id.startswith(parsed.prefix or "")]
    return _one([(t, None) for t in found], parsed, option, where)


@dataclass(frozen=True)
class ResolvedTrial:
    store: MlflowStore
    trial: TrialRecord


def resolve_trial(ref: str, tracking_uri: str, *, experiment: str | None = None,
                  number_experiment: str | None = None, option: str = "--trial") -> ResolvedTrial:
    """Find the trial ``ref`` names in the store at ``tracking_uri`` (in ``experiment`` when given).

    ``number_experiment`` (e.g. the name of a recipe given with ``--recipe``) is where a trial
    number is looked up when no ``experiment`` is named and that experiment exists; run ids
    and prefixes are looked up everywhere.

    Raises UsageError (exit 2) for a malformed id, a store that does not exist (a local SQLite
    file is never created here), an unknown experiment, or an id that names no trial or several.
    A full run id may name any run (a confirmation run too); a number or a prefix names trials.
    """
    from mlflow.exceptions import MlflowException

    from mlflow_autoresearch.lineage._mlflow import MlflowStore, open_client, sqlite_path

    parsed = parse_ref(ref, option)
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise UsageError(f"{option} {ref}: there is no tracking store at {tracking_uri}")
    client = open_client(tracking_uri)
    if not experiment and parsed.number is not None and number_experiment \
            and client.get_experiment_by_name(number_experiment) is not None:
        experiment = number_experiment
    experiments: dict[str, str] = {}
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None or exp.lifecycle_stage == "deleted":
            raise UsageError(f"{option} {ref}: no experiment named {experiment!r} at {tracking_uri}")
        experiments = {exp.experiment_id: exp.name}
        where = f"in experiment {experiment!r}"
    else:
        where = f"at {tracking_uri}"

    if parsed.full:
        try:
            run = client.get_run(parsed.prefix)
            exp_name = experiments.get(run.info.experiment_id) if experiment else \
                client.get_experiment(run.info.experiment_id).name
        except MlflowException:
            run = exp_name = None
        if run is None or exp_name is None:
            raise UsageError(f"{option} {ref}: no such run {where}")
        store = MlflowStore(exp_name, tracking_uri, create=False)
        return ResolvedTrial(store, store.get(run.info.run_id))

    if not experiment:
        experiments = {e.experiment_id: e.name for e in _all_experiments(client)}
    trial_filter = f"tags.`{S.KIND}` = 'trial'"
    if parsed.number is not None:
        flt = f"{trial_filter} AND tags.`{S.TRIAL}` = '{parsed.number}'"
    else:
        flt = f"attributes.run_id LIKE '{parsed.prefix}%'"  # bare digits of 6+: a prefix, as `git` reads them
    found: dict[str, tuple[object, str]] = {}
    for run in client.search_runs(list(experiments), flt, max_results=50) if experiments else []:
        if run.data.tags.get(S.KIND) == "trial":
            found[run.info.run_id] = (run, experiments[run.info.experiment_id])
    records = [(MlflowStore._to_record(run), name) for run, name in found.values()]
    trial = _one(sorted(records, key=lambda r: (r[1], r[0].number)), parsed, option, where)
    store = MlflowStore(found[trial.run_id][1], tracking_uri, create=False)
    return ResolvedTrial(store, store.get(trial.run_id))


def _all_experiments(client) -> list:
    out, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out

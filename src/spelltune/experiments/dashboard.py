"""`spelltune dashboard`: every sweep and experiment of a repository, live, in optuna-dashboard.

optuna-dashboard serves Optuna studies. The Bayesian sweeps keep theirs (a journal file under
.spelltune/sweeps/, or a database); grid and random sweeps and plain `dvc exp run`s are DVC
experiments only. So the page serves one in-memory Optuna storage that a thread refreshes
every few seconds from both:

- each Bayesian study, copied trial by trial (params, intermediate values, state, value);
- the experiments of HEAD as `dvc exp show` lists them (queued, running, done, failed), one
  study per grid/random sweep (`<sweep>-NNN` names) and one, `experiments`, for the rest:
  the params that differ between them, the validation metric as the value, and its
  in-training values by step as intermediate values (read from a running experiment's
  temporary workspace while it trains). Trials of a Bayesian study are not shown twice.

A trial only moves forward (waiting -> running -> complete/pruned/failed), as in Optuna; a
study whose params gain a value is rebuilt under a new id (the page's study list finds it).
"""

from __future__ import annotations

import datetime
import io
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spelltune import store
from spelltune.experiments.runs import (
    CURVES_DIR,
    DEFAULT_METRIC,
    EVAL_FILE,
    LOG_SCALE,
    read_curve,
)
from spelltune.params import flatten
from spelltune.paths import SUMMARY_FILE

SWEEP_TRIAL = re.compile(r"^(?P<sweep>.+)-\d{3}(-\d+)?$")  # spelltune.sweeps.queue's names
PLAIN_STUDY = "experiments"
# `dvc exp show`'s executor states -> Optuna's trial states (by name: optuna loads lazily).
STATES = {"queued": "WAITING", "running": "RUNNING", "failed": "FAIL"}
KEPT_ATTRS = ("dvc_exp", "result", "worker", "wandb_run_id")


@dataclass
class Record:
    """One trial as a source sees it; `key` is stable across refreshes."""

    key: str
    study: str
    state: str  # an Optuna TrialState name
    value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    distributions: dict[str, Any] = field(default_factory=dict)  # Bayesian trials bring theirs
    intermediate: dict[int, float] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    order: float = 0.0


def bayes_records(storages: dict[str, Any]) -> list[Record]:
    """The trials of every study of each Bayesian sweep storage (url -> Optuna storage)."""
    records = []
    for url, storage in storages.items():
        for summary in storage.get_all_studies():
            study_id = storage.get_study_id_from_name(summary.study_name)
            for t in storage.get_all_trials(study_id, deepcopy=False):
                records.append(Record(
                    key=f"{url}#{summary.study_name}#{t.number}", study=summary.study_name, state=t.state.name,
                    value=t.value if t.state.name in ("COMPLETE", "PRUNED") else None, params=dict(t.params),
                    distributions=dict(t.distributions), intermediate=dict(t.intermediate_values),
                    attrs={k: t.user_attrs[k] for k in KEPT_ATTRS if k in t.user_attrs},
                    order=t.datetime_start.timestamp() if t.datetime_start else time.time()))
    return records


def experiment_records(repo: Path, metric: str = DEFAULT_METRIC, skip: set[str] = frozenset()) -> list[Record]:
    """The experiments of HEAD, queued to finished, minus the names in `skip`."""
    records = []
    for row in store.exp_show(repo):
        if row.get("rev") == "workspace":
            continue
        for exp in row.get("experiments") or []:
            last = exp["revs"][0]
            name = exp.get("name") or last.get("name") or last["rev"][:7]
            if name in skip:
                continue
            data = last.get("data") or {}
            state, value, curve = _outcome(repo, last, exp.get("executor") or {}, metric)
            match = SWEEP_TRIAL.match(name)
            records.append(Record(
                key=f"dvc#{name}", study=match["sweep"] if match else PLAIN_STUDY, state=state, value=value,
                params=flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}),
                intermediate={} if curve is None else dict(zip(curve["step"].astype(int), curve["value"])),
                attrs={"dvc_exp": name, "rev": last["rev"][:7]}, order=_timestamp(data.get("timestamp"))))
    return records


def _outcome(repo: Path, last: dict, executor: dict, metric: str) -> tuple[str, float | None, Any]:
    """(Optuna state name, value, the metric's in-training curve or None) of one experiment."""
    file, _, key = metric.rpartition(":")
    curve_path = f"{CURVES_DIR}/{key}.tsv"
    state = executor.get("state")
    if state in STATES:
        root = (executor.get("local") or {}).get("root")
        text = (Path(root) / curve_path).read_text() if root and (Path(root) / curve_path).exists() else None
        # Before its train stage starts, a queued run's workspace holds the baseline's curves.
        fresh = text and text != store.read("HEAD", curve_path, repo)
        return STATES[state], None, _partial_curve(text) if fresh else None
    if last.get("error"):
        return "FAIL", None, None
    rev = last["rev"]
    value = store.scores(rev, repo).get(f"{file or EVAL_FILE}:{key}")
    text = store.read(rev, curve_path, repo)
    curve = read_curve(io.StringIO(text)) if text else None
    summary = store.read_json(rev, SUMMARY_FILE.as_posix(), repo) or {}
    if summary.get("early_stop_reason") == "pruned":
        return "PRUNED", value, curve
    return ("COMPLETE" if value is not None else "FAIL"), value, curve


def _partial_curve(text: str):
    """A curve DVCLive is still writing: its last line may be cut."""
    import pandas as pd

    try:
        return read_curve(io.StringIO(text[: text.rfind("\n") + 1]))
    except (ValueError, pd.errors.ParserError):
        return None


def _timestamp(text: str | None) -> float:
    try:
        return datetime.datetime.fromisoformat(text).timestamp() if text else time.time()
    except ValueError:
        return time.time()


def space(records: list[Record]) -> dict[str, Any]:
    """The distributions of a study of DVC experiments: the params that differ between its
    trials, numbers on their observed range (log scale where runs.LOG_SCALE says), others
    as categories."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    keys = sorted({k for r in records for k in r.params})
    out = {}
    for key in keys:
        values = [r.params.get(key) for r in records]
        if len({repr(v) for v in values}) <= 1:
            continue
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numbers:
            lo, hi = min(values), max(values)
            log = key in LOG_SCALE and lo > 0
            if all(isinstance(v, int) for v in values):
                out[key] = IntDistribution(int(lo), int(hi), log=log)
            else:
                out[key] = FloatDistribution(float(lo), float(hi), log=log)
        else:
            out[key] = CategoricalDistribution(sorted({str(v) for v in values}))
    return out


class Mirror:
    """An InMemoryStorage kept in step with the sources by `sync`."""

    def __init__(self, direction: str = "maximize"):
        import optuna

        self.optuna = optuna
        self.storage = optuna.storages.InMemoryStorage()
        self.direction = direction
        self.studies: dict[str, tuple[int, dict]] = {}  # name -> (study id, its distributions)
        self.trials: dict[str, tuple[str, int]] = {}  # record key -> (study name, trial id)

    def sync(self, records: list[Record]) -> None:
        by_study: dict[str, list[Record]] = {}
        for r in sorted(records, key=lambda r: (r.order, r.key)):
            by_study.setdefault(r.study, []).append(r)
        for name, group in by_study.items():
            dists = {} if group[0].distributions else space(group)
            study_id = self._study(name, dists)
            for r in group:
                self._trial(name, study_id, r, r.distributions or {k: d for k, d in dists.items() if k in r.params})

    def _study(self, name: str, dists: dict) -> int:
        known = self.studies.get(name)
        if known and known[1] == dists:
            return known[0]
        if known:  # a param gained a value and Optuna's distributions are fixed: rebuild
            self.storage.delete_study(known[0])
            self.trials = {k: v for k, v in self.trials.items() if v[0] != name}
        directions = self.optuna.study.StudyDirection
        direction = directions.MINIMIZE if self.direction == "minimize" else directions.MAXIMIZE
        study_id = self.storage.create_new_study([direction], name)
        self.studies[name] = (study_id, dists)
        return study_id

    def _trial(self, study: str, study_id: int, r: Record, dists: dict) -> None:
        TrialState = self.optuna.trial.TrialState
        state = TrialState[r.state]
        known = self.trials.get(r.key)
        current = self.storage.get_trial(known[1]) if known else None
        if current is None or (current.state.is_finished() and not state.is_finished()):  # new, or run again
            categorical = self.optuna.distributions.CategoricalDistribution
            params = {k: str(r.params[k]) if isinstance(d, categorical) and not r.distributions else r.params[k]
                      for k, d in dists.items()}
            template = self.optuna.trial.create_trial(
                state=state, value=r.value if state == TrialState.COMPLETE else None, params=params,
                distributions=dists, user_attrs=r.attrs, intermediate_values=r.intermediate)
            self.trials[r.key] = (study, self.storage.create_new_trial(study_id, template_trial=template))
            return
        if current.state.is_finished():
            return
        for step, value in r.intermediate.items():
            if step not in current.intermediate_values:
                self.storage.set_trial_intermediate_value(known[1], step, value)
        if state not in (current.state, TrialState.WAITING):
            values = [r.value] if state == TrialState.COMPLETE else None
            self.storage.set_trial_state_values(known[1], state, values)


def refresh_forever(mirror: Mirror, sources, every: float, stop: threading.Event) -> None:
    """Call `sync(sources())` every `every` seconds until `stop`; a failing read (a journal
    being written, `dvc exp show` during a commit) is retried at the next tick."""
    while not stop.is_set():
        try:
            mirror.sync(sources())
        except Exception as exc:  # noqa: BLE001 - the page keeps its last state
            print(f"dashboard: refresh failed, retrying: {exc}", flush=True)
        stop.wait(every)


def serve(repo: Path, storages: dict[str, Any], host: str, port: int, every: float, metric: str,
          direction: str = "maximize") -> None:
    """Serve the mirror at http://host:port/dashboard/ until interrupted."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna_dashboard

    mirror = Mirror(direction)

    def sources() -> list[Record]:
        bayes = bayes_records(storages)
        skip = {r.attrs["dvc_exp"] for r in bayes if "dvc_exp" in r.attrs}
        return bayes + experiment_records(repo, metric, skip)

    stop = threading.Event()
    thread = threading.Thread(target=refresh_forever, args=(mirror, sources, every, stop), daemon=True)
    thread.start()

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # one line per request would bury the refresh errors
            pass

    server = make_server(host, port, optuna_dashboard.wsgi(mirror.storage), handler_class=Quiet)
    print(f"dashboard: http://{host}:{server.server_port}/dashboard/ (refreshed every {every:g} s; Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()

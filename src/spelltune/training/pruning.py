"""Early termination inside a training run that is one trial of a Bayesian sweep.

`spelltune sweep run` (method bayes) starts each trial as `dvc exp run --temp` with these
environment variables set; the train stage calls `reporter_from_env()` once and, after
every validation evaluation, `reporter.should_prune(step, metrics)`. The reporter tells
the trial's intermediate value to the shared Optuna study and asks its pruner (Hyperband
or median rule) whether the trial is behind at this rung.

Outside a sweep none of the variables is set and `reporter_from_env()` returns None
without importing optuna, so the train stage pays nothing.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path

from spelltune import handoff

log = logging.getLogger("spelltune.training.pruning")

DB_PREFIXES = ("sqlite:", "postgresql", "mysql", "oracle", "mssql")


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None, on_stale=None):
    """A database URL (sqlite:///x.db, postgresql://user:pw@host/db) or a journal file path
    (optionally `journal:PATH`): a database, or a journal file on a shared filesystem, lets
    workers on several machines share one study. For a database, `heartbeat_interval` and
    `grace_period` turn on Optuna's RDB heartbeat, and `on_stale(study, trial)` is called for
    each trial failed because its worker stopped beating (Optuna has no heartbeat for journals)."""
    import optuna

    if url.startswith(DB_PREFIXES):
        kwargs = {}
        if heartbeat_interval:
            kwargs = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
                      "heartbeat_stale_trial_callback": on_stale}
        # pre_ping: a connection the server closed while a long trial ran is replaced, not an error
        engine = {"pool_pre_ping": True} if url.startswith("postgresql") else None
        import sqlalchemy.exc

        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Workers on several machines starting at once on an empty database race to
                # create Optuna's tables (a duplicate row, or PostgreSQL's DuplicateTable);
                # the losers find them made on their next try.
                if attempt == 4:
                    raise
                time.sleep(0.5 + random.random())
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(url.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_pruner(spec: Mapping | None):
    """The Optuna pruner for a sweep's early_terminate (as carried in SPELLTUNE_PRUNER)."""
    import optuna

    if not spec:
        return optuna.pruners.NopPruner()
    if spec["type"] == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=int(spec.get("min_resource") or 1),
            max_resource=spec.get("max_resource") or "auto",
            reduction_factor=int(spec.get("reduction_factor") or 3),
        )
    if spec["type"] == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(spec.get("n_startup_trials", 2)),
            n_warmup_steps=int(spec.get("min_resource") or 0),
        )
    raise ValueError(f"{handoff.PRUNER}: unknown pruner type {spec['type']!r}; allowed: hyperband, median")


class TrialReporter:
    """Reports a trial's validation metric at each evaluation and says when to stop."""

    def __init__(self, trial, metric: str):
        self.trial = trial
        self.metric = metric
        self.pruned_at: int | None = None
        self._warned = False

    @property
    def number(self) -> int:
        return self.trial.number

    def value(self, metrics: Mapping[str, float]) -> float | None:
        for key in (self.metric, "val/" + self.metric.split("/", 1)[-1]):
            value = metrics.get(key)
            if value is not None:
                return float(value)
        return None

    def should_prune(self, step: int, metrics: Mapping[str, float]) -> bool:
        value = self.value(metrics)
        if value is None:
            if not self._warned:
                log.warning("trial %d: no %s among this evaluation's metrics (%s); it cannot be pruned",
                            self.number, self.metric, ", ".join(sorted(metrics)))
                self._warned = True
            return False
        self.trial.report(value, int(step))
        if self.trial.should_prune():
            self.pruned_at = int(step)
            log.info(
                "trial %d: pruned at step %d (%s = %.4g is behind at this rung)", self.number, step, self.metric, value
            )
            return True
        return False


def reporter_from_env(environ: Mapping[str, str] | None = None) -> TrialReporter | None:
    """The trial reporter when this process runs inside a bayes sweep, else None."""
    env = os.environ if environ is None else environ
    if not env.get(handoff.OPTUNA_STORAGE) or not env.get(handoff.STUDY) or not env.get(handoff.TRIAL_NUMBER):
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = json.loads(env.get(handoff.PRUNER) or "null")
    storage = open_storage(env[handoff.OPTUNA_STORAGE])
    study = optuna.load_study(study_name=env[handoff.STUDY], storage=storage, pruner=make_pruner(spec))
    study_id = storage.get_study_id_from_name(env[handoff.STUDY])
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(env[handoff.TRIAL_NUMBER]))
    metric = env.get(handoff.METRIC) or "val/loss"
    return TrialReporter(optuna.trial.Trial(study, trial_id), metric)

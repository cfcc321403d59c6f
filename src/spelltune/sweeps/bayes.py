"""Bayesian sweeps: Optuna TPE, each trial `dvc exp run --temp`, with early termination
(spelltune.training.pruning) and one retry of a trial that failed or whose worker died.
The runner's loop is here; the study's parts are in sweeps/study.py, one trial's run in
sweeps/launch.py, the shared bookkeeping in sweeps/ledger.py."""

from __future__ import annotations

import os
import socket
import threading
import time

from spelltune.sweeps.launch import TrialFailed, TrialLauncher
from spelltune.sweeps.ledger import TrialLedger
from spelltune.sweeps.schema import Sweep
from spelltune.sweeps.space import Space
from spelltune.sweeps.study import (
    decode,
    default_storage,
    distributions,
    open_study,
    pruner_spec,
    pruner_text,
    shown_storage,
    suggest,
)
from spelltune.sweeps.trials import say, state_dir, thread_override
from spelltune.training.devices import cores


class Skip(Exception):  # a trial not run: it breaks a constraint, or run_cap is taken
    pass


class BayesRunner:
    """Workers (threads here; processes or machines elsewhere) sharing one Optuna study.
    Each thread runs Optuna's own loop, `study.optimize`, whose objective runs the trial as
    `dvc exp run --temp -n <sweep>-tNNN -S ...` and returns the metric read back from the
    experiment. Optuna's mechanisms do the bookkeeping:

    - stop: `MaxTrialsCallback(run_cap, states=(COMPLETE, PRUNED))` after each trial; before a
      trial starts, the objective also waits while run_cap is taken by finished, running and
      waiting trials, so that workers elsewhere never overshoot it;
    - a dead worker (database storage): the RDB heartbeat (`heartbeat_interval`,
      `grace_period`); the next worker to start a trial fails the stale one
      (`fail_stale_trials`) and `RetryHeartbeatStaleTrialCallback` (formerly
      RetryFailedTrialCallback) enqueues it once more, WAITING, which the next `ask` takes;
    - a failed `dvc exp run`: the same callback enqueues it once more; then it stays failed.

    A journal file has no heartbeat in Optuna: there a user attr `heartbeat` is written every
    heartbeat_interval and a RUNNING trial whose worker is gone (this host: its pid; any host:
    no heartbeat for grace_period) is failed here and retried through the same callback."""

    POLL_S = 2.0

    def __init__(self, sweep: Sweep, space: Space, args):
        import warnings

        import optuna

        from spelltune.training.pruning import DB_PREFIXES, open_storage

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # a caught Skip or failure is reported by us
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.optuna = optuna
        self.TS = optuna.trial.TrialState
        self.sweep, self.space, self.args = sweep, space, args
        self.cap = sweep.run_cap or 1
        self.storage_url = args.storage or default_storage(sweep.name)
        self.database = self.storage_url.startswith(DB_PREFIXES)
        self.host = socket.gethostname()
        self.ledger = TrialLedger(optuna, sweep, args, self.host, self.database)
        self.storage = open_storage(self.storage_url, heartbeat_interval=args.heartbeat_interval,
                                    grace_period=args.grace_period, on_stale=self.ledger.on_stale)
        self.spec = pruner_spec(sweep, space)
        self.study = open_study(optuna, sweep, self.storage, self.spec, self.host)
        self.study_id = self.storage.get_study_id_from_name(sweep.name)
        self.ledger.attach(self.study, self.storage)
        self.dists, self.constants, self.encoded = distributions(sweep)
        self.threads = thread_override(sweep, space, args.jobs)
        self.stop = threading.Event()
        self.local = threading.local()
        self.errors: list[Exception] = []
        self.log_dir = state_dir() / "sweeps" / sweep.name
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.launcher = TrialLauncher(self)

    # -- one worker: Optuna's loop
    def worker(self, wid: int) -> None:
        stop_at_cap = self.optuna.study.MaxTrialsCallback(self.cap, states=(self.TS.COMPLETE, self.TS.PRUNED))
        self.local.skipped = 0
        try:
            self.study.optimize(self.objective, callbacks=[stop_at_cap, self.after_trial], catch=(Skip, TrialFailed))
        except Exception as exc:  # noqa: BLE001 - one worker's bug must be seen, not silently end it
            say(f"error: worker {wid}: {type(exc).__name__}: {exc}")
            self.errors.append(exc)

    def after_trial(self, study, trial) -> None:
        if not self.database:
            self.ledger.reap()  # the next ask then takes a dead worker's trial (WAITING) first
        if self.stop.is_set():
            study.stop()

    def wait_for_slot(self, trial, retry: bool) -> None:
        """Return when this trial may run; Skip when run_cap is finished (stopping this
        worker) or, for a new trial, when a retry waits (the next ask takes it). A retry
        waits its turn too: a new trial may have taken its original's slot in between."""
        TS = self.TS
        while True:
            trials = self.ledger.trials()
            taken, finished = self.ledger.slots(trials, trial.number)
            if finished >= self.cap or self.stop.is_set():
                self.study.stop()  # failed-for-good trials count here, not in MaxTrialsCallback
                raise Skip("run_cap reached")
            if taken < self.cap:
                return
            if not retry and any(t.state == TS.WAITING for t in trials):
                raise Skip("a retried trial waits")
            time.sleep(self.POLL_S)
            if not self.database:
                trial.set_user_attr("heartbeat", time.time())
            self.ledger.reap()

    def objective(self, trial) -> float:
        retry_of = self.ledger.retry_of(self.ledger.frozen(trial))
        trial.set_user_attr("worker", f"{self.host}:{os.getpid()}")
        trial.set_user_attr("heartbeat", time.time())
        trial.set_user_attr("spelltune_run", False)  # until it runs (a retry's copy says True)
        config = {**self.constants, **decode(suggest(trial, self.dists), self.dists, self.encoded)}
        if retry_of is None:
            why = self.space.check(config)
            if why:
                self.local.skipped += 1
                trial.set_user_attr("skipped", why)
                if self.local.skipped > 200:
                    say("error: 200 draws in a row broke the constraints or the params schema; stopping this worker")
                    self.study.stop()
                raise Skip(why)
            self.local.skipped = 0
        try:
            self.wait_for_slot(trial, retry=retry_of is not None)
        except Skip as exc:
            trial.set_user_attr("skipped", str(exc))
            raise
        trial.set_user_attr("spelltune_run", True)
        return self.launcher.run_trial(trial, config, retry_of)

    # -- the workers together
    def run(self) -> int:
        say(
            f"study {self.sweep.name!r} in {shown_storage(self.storage_url)}; early termination: "
            f"{pruner_text(self.spec)}"
        )
        if self.threads:
            say(
                f"{self.args.jobs} workers on {cores()} cores: each trial gets -S "
                f"train.threads={self.threads['train.threads']}"
            )
        self.ledger.reap()
        workers = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(self.args.jobs)]
        for w in workers:
            w.start()
        try:
            while any(w.is_alive() for w in workers):
                for w in workers:
                    w.join(timeout=0.5)
        except KeyboardInterrupt:
            say("interrupted: stopping the running trials (rerun the same command to resume)")
            self.stop.set()
            self.launcher.terminate()
            for w in workers:
                w.join(timeout=60)
            return 130
        code = report(self.sweep, self.study, self.ledger)
        return 1 if self.errors else code


def report(sweep: Sweep, study, ledger: TrialLedger) -> int:
    """The table of the trials that ran, the best one; 0 when any completed or was pruned."""
    TS = ledger.TS
    rows = [t for t in ledger.trials() if t.user_attrs.get("spelltune_run")]
    for t in rows:
        value = f"{sweep.metric.name}={t.value:.4g}" if t.value is not None else t.user_attrs.get("result", "")
        if t.state == TS.PRUNED and t.intermediate_values:
            step = max(t.intermediate_values)
            value = f"pruned at step {step} ({sweep.metric_key}={t.intermediate_values[step]:.4g})"
        elif t.state == TS.FAIL and not value:
            value = "interrupted"
        extra = f" (retry of {ledger.retry_of(t)})" if ledger.retry_of(t) is not None else ""
        print(f"{t.user_attrs.get('dvc_exp', '-')}  {t.state.name.lower():8s} {value}{extra}  "
              f"{' '.join(f'{k}={v}' for k, v in (t.user_attrs.get('config') or {}).items())}")
    complete = [t for t in rows if t.state == TS.COMPLETE]
    n_pruned = sum(t.state == TS.PRUNED for t in rows)
    n_failed = sum(t.state == TS.FAIL for t in rows)
    if complete:
        best = study.best_trial
        print(f"best: {best.user_attrs.get('dvc_exp')} {sweep.metric.name}={best.value:.4g}"
              f" (dvc exp apply {best.user_attrs.get('dvc_exp')})")
    n_counted = sum(ledger.counted(t) for t in rows)
    print(f"trials: {n_counted}  complete: {len(complete)}  pruned: {n_pruned}  failed: {n_failed}")
    return 0 if complete or n_pruned else 1

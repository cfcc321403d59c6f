"""The bookkeeping of one Optuna study that several workers share: which trials count
toward run_cap, which are retries, and which workers are gone (their trial failed and
enqueued once more)."""

from __future__ import annotations

import os
import time
from typing import Any

from spelltune import store
from spelltune.metric_names import METRIC_FILES
from spelltune.sweeps.trials import say


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TrialLedger:
    """The study's trials as the runner counts them; `attach` the study and its storage once
    they exist (the storage needs `on_stale` first)."""

    def __init__(self, optuna, sweep, args, host: str, database: bool):
        self.optuna, self.TS = optuna, optuna.trial.TrialState
        self.sweep, self.args, self.host, self.database = sweep, args, host, database
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        self.study = self.storage = self.study_id = None
        self.told: set[int] = set()  # trials whose orphaned run was announced

    def attach(self, study, storage) -> None:
        self.study, self.storage = study, storage
        self.study_id = storage.get_study_id_from_name(study.study_name)

    # -- storage helpers
    def trials(self):
        return self.study.get_trials(deepcopy=False)

    def trial_id(self, trial) -> int:
        """The storage's id of a trial, through Optuna's public storage API."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

    def frozen(self, trial):
        return self.storage.get_trial(self.trial_id(trial))

    @staticmethod
    def retry_of(t) -> int | None:
        return t.system_attrs.get("failed_trial")

    def counted(self, t) -> bool:
        """A configuration that was run (its retries are the same configuration)."""
        return bool(t.user_attrs.get("spelltune_run")) and self.retry_of(t) is None

    def slots(self, trials, mine: int) -> tuple[int, int]:
        """(taken, finished) of run_cap, as seen by trial `mine` about to start: finished =
        complete, pruned, or failed for good (a failed retry); taken also counts the waiting
        retries, the running retries and the running trials that asked before `mine`."""
        TS = self.TS
        taken = finished = 0
        for t in trials:
            if t.number == mine:
                continue
            retry = self.retry_of(t) is not None
            if t.state in (TS.COMPLETE, TS.PRUNED) or (
                t.state == TS.FAIL and retry and t.user_attrs.get("spelltune_run")
            ):
                finished += 1
                taken += 1
            elif t.state == TS.WAITING or (t.state == TS.RUNNING and (retry or t.number < mine)):
                taken += 1
        return taken, finished

    # -- dead workers
    def on_stale(self, study, trial) -> None:
        """A RUNNING trial whose worker died was failed: run it once more, as a new trial
        (unless it died before its run began, waiting for a slot: nothing to repeat)."""
        if not trial.user_attrs.get("spelltune_run"):
            return
        name = trial.user_attrs.get("dvc_exp", "-")
        say(f"trial {trial.number} ({name}) was interrupted (its worker {trial.user_attrs.get('worker', '?')} "
            f"stopped beating): it runs again as a new trial")
        self.retry(study, trial)

    def reap(self) -> None:
        """The RUNNING trials whose runner is gone: one whose own `dvc exp run` still runs on
        this host (only its runner was killed) is left to finish, its outcome recorded when
        it ends; one that finished is recorded; the rest are failed and enqueued once more
        (WAITING). With a database, Optuna's heartbeat decides what is stale."""
        TS = self.TS
        for t in self.trials():
            if t.state != TS.RUNNING or self.runner_alive(t):
                continue
            tid = self.trial_id(t)
            if self.process_alive(t):
                if self.database:
                    self.storage.record_heartbeat(tid)
                if t.number not in self.told:
                    self.told.add(t.number)
                    say(f"trial {t.number} ({t.user_attrs.get('dvc_exp')}): its runner stopped, its run goes on "
                        f"(pid {t.user_attrs['process']['pid']}); its result is recorded when it ends")
                continue
            name = t.user_attrs.get("dvc_exp")
            if name and name in store.refs():  # it had finished before the interruption: tell that
                state, value, why = self.outcome(name)
                try:
                    self.storage.set_trial_user_attr(tid, "result", why)
                    self.storage.set_trial_state_values(tid, state, [value] if state == TS.COMPLETE else None)
                    say(f"trial {t.number} ({name}) had finished before the interruption: {why}")
                except (RuntimeError, ValueError):
                    pass  # someone else told it first
                continue
            if self.database:
                continue  # failed below if its heartbeat is stale
            try:
                self.storage.set_trial_user_attr(tid, "result", "interrupted")
                failed = self.storage.set_trial_state_values(tid, TS.FAIL)
            except (RuntimeError, ValueError):  # UpdateFinishedTrialError: someone else failed it
                continue
            if failed:
                self.on_stale(self.study, self.storage.get_trial(tid))
        if self.database:  # Optuna's RDB heartbeat; calls on_stale for each
            self.optuna.storages.fail_stale_trials(self.study)

    def runner_alive(self, t) -> bool:
        """This host: the runner's pid lives; elsewhere: its heartbeat is recent (a journal),
        or Optuna's heartbeat says so (a database)."""
        host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if host == self.host and pid.isdigit():
            return int(pid) == os.getpid() or pid_alive(int(pid))
        if self.database:
            return True
        beat = t.user_attrs.get("heartbeat") or (t.datetime_start.timestamp() if t.datetime_start else time.time())
        return time.time() - beat <= self.args.grace_period

    def process_alive(self, t) -> bool:
        """The trial's own `dvc exp run` (recorded at its launch) still runs on this host."""
        import psutil

        proc = t.user_attrs.get("process") or {}
        if proc.get("host") != self.host:
            return False
        try:
            p = psutil.Process(proc["pid"])
            return abs(p.create_time() - proc["started"]) < 1 and p.status() != psutil.STATUS_ZOMBIE
        except (psutil.Error, KeyError, TypeError):
            return False

    # -- results
    def outcome(self, name: str) -> tuple[Any, float | None, str]:
        """(state, value, why) of a finished experiment."""
        TS = self.TS
        ref = store.refs().get(name)
        if ref is None:
            return TS.FAIL, None, "the experiment did not finish (no DVC experiment); see its log"
        summary = store.read_json(ref, "metrics/summary.json") or {}
        value = store.metric(ref, self.sweep.metric.name)
        if summary.get("early_stop_reason") == "pruned":
            return TS.PRUNED, value, "pruned"
        if value is None:
            return TS.FAIL, None, f"metric {self.sweep.metric.name} not found in {', '.join(METRIC_FILES)}"
        return TS.COMPLETE, value, "complete"

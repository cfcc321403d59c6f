"""One Bayesian trial run: its `dvc exp run --temp` launched with the study in its
environment, watched to its end (the trial's heartbeat and its own process recorded
meanwhile), its outcome told to Optuna, its experiment pushed."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import psutil

from spelltune import handoff, store
from spelltune.repo import dvc, tool
from spelltune.sweeps.overrides import format_value, overrides_args
from spelltune.sweeps.study import absolute_storage
from spelltune.sweeps.trials import say, show_config

LOCK_BUSY = "is busy, it is being blocked by"  # DVC's LockError (dvc/rwlock.py)
LOCK_RETRIES = 8


class TrialFailed(Exception):  # its `dvc exp run` failed or was interrupted
    pass


class TrialLauncher:
    """Runs trials for the runner's workers (one at a time per worker thread); `stop` is the
    runner's interrupt, `terminate` ends every `dvc exp run` still running."""

    def __init__(self, runner):
        # The runner's settings, read once: the launcher never changes them.
        self.optuna, self.TS = runner.optuna, runner.TS
        self.sweep, self.space, self.args = runner.sweep, runner.space, runner.args
        self.study, self.ledger = runner.study, runner.ledger
        self.storage_url, self.spec, self.threads = runner.storage_url, runner.spec, runner.threads
        self.host, self.database, self.stop = runner.host, runner.database, runner.stop
        self.log_dir = runner.log_dir
        self.children: set[subprocess.Popen] = set()
        self.lock = threading.Lock()

    def run_trial(self, trial, config: dict, retry_of: int | None) -> float:
        TS = self.TS
        refs = store.refs()
        name = f"{self.sweep.name}-t{trial.number:03d}"
        k = 2
        while name in refs:  # a name left by an earlier study of the same name: do not clash
            name, k = f"{self.sweep.name}-t{trial.number:03d}-{k}", k + 1
        overrides = {**self.space.fixed, **self.threads, **config}
        wandb_id = handoff.new_run_id()
        for key, value in {"dvc_exp": name, "worker": f"{self.host}:{os.getpid()}", "heartbeat": time.time(),
                           "config": {k: format_value(v) for k, v in config.items()}, "wandb_run_id": wandb_id}.items():
            trial.set_user_attr(key, value)
        env = {
            **os.environ,
            handoff.OPTUNA_STORAGE: absolute_storage(self.storage_url),
            handoff.STUDY: self.sweep.name,
            handoff.TRIAL_NUMBER: str(trial.number),
            handoff.METRIC: self.sweep.metric_key,
            handoff.PRUNER: json.dumps(self.spec),
            handoff.WANDB_RUN_ID: wandb_id,  # train creates the run, evaluate adds its scores to it
        }
        env.pop("DVC_EXP_BASELINE_REV", None)
        cmd = [tool("dvc"), "exp", "run", "--temp", "-n", name, *overrides_args(overrides)]
        again = f" (retry of trial {retry_of})" if retry_of is not None else ""
        say(f"trial {trial.number} ({name}) started{again}: {show_config(config)}")
        log_file = self.log_dir / f"{name}.log"
        proc = self.launch(trial, cmd, env, log_file)
        for attempt in range(LOCK_RETRIES):
            # Another worker's `dvc exp run` held the repository's experiment lock at our start:
            # nothing of this trial ran, so launch it again rather than fail it.
            if proc.returncode == 0 or self.stop.is_set() or LOCK_BUSY not in log_file.read_text(errors="replace"):
                break
            say(f"trial {trial.number} ({name}): another `dvc exp run` holds DVC's experiment lock; "
                f"launching it again in {1 + attempt} s")
            time.sleep(1 + attempt)
            proc = self.launch(trial, cmd, env, log_file)
        if self.stop.is_set() and proc.returncode != 0:
            trial.set_user_attr("result", "interrupted")
            self.ledger.retry(self.study, self.ledger.frozen(trial))
            say(f"trial {trial.number} ({name}) interrupted; rerunning the sweep runs it again")
            raise TrialFailed("interrupted")
        if proc.returncode == 0:
            state, value, why = self.ledger.outcome(name)
        else:
            state, value, why = TS.FAIL, None, f"dvc exp run exited {proc.returncode}; see {log_file}"
        trial.set_user_attr("result", why)
        shown = f" {self.sweep.metric.name}={value:.4g}" if value is not None else ""
        say(f"trial {trial.number} ({name}) {state.name.lower()}{shown}" + ("" if state != TS.FAIL else f": {why}"))
        if state != TS.FAIL and self.args.push:
            self.push(name)
        if state == TS.COMPLETE:
            return value
        if state == TS.PRUNED:
            raise self.optuna.TrialPruned(why)
        if proc.returncode != 0 and retry_of is None:
            self.ledger.retry(self.study, self.ledger.frozen(trial))
            say(f"trial {trial.number} will be retried once")
        raise TrialFailed(why)

    def launch(self, trial, cmd: list[str], env: dict, log_file: Path) -> subprocess.Popen:
        """Run the trial's `dvc exp run` to its end, beating the trial's heartbeat meanwhile."""
        with open(log_file, "w") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            # The trial's own process: if only this runner dies, a rerun lets it finish (ledger.reap).
            with contextlib.suppress(psutil.Error):
                trial.set_user_attr("process", {"host": self.host, "pid": proc.pid,
                                                "started": psutil.Process(proc.pid).create_time()})
            with self.lock:
                self.children.add(proc)
            while True:
                try:
                    proc.wait(timeout=self.args.heartbeat_interval)
                    break
                except subprocess.TimeoutExpired:
                    if not self.database:  # the RDB heartbeat is Optuna's own thread
                        trial.set_user_attr("heartbeat", time.time())
            with self.lock:
                self.children.discard(proc)
        return proc

    def terminate(self) -> None:
        """SIGTERM to every trial's `dvc exp run` still running (the runner was interrupted)."""
        with self.lock:
            for proc in self.children:
                proc.terminate()

    def push(self, name: str) -> None:
        """The experiment's commit to the git remote and its outputs to the default DVC remote."""
        for attempt in range(6):  # the repo's lock (another worker's trial) or a busy remote: try again
            proc = dvc("exp", "push", self.args.push, name)
            if proc.returncode == 0:
                say(f"pushed {name} to {self.args.push} (git) and the DVC remote")
                return
            time.sleep(2 * (attempt + 1))
        say(f"warning: dvc exp push {self.args.push} {name} failed: "
            f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}; push it later with the same command")

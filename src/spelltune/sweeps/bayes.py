"""Bayesian sweeps: Optuna TPE, each trial `dvc exp run --temp`, with early termination
(spelltune.training.pruning) and one retry of a trial that failed or whose worker died."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import zlib
from pathlib import Path

import psutil

from spelltune import handoff, store
from spelltune.repo import dvc, tool
from spelltune.sweeps.ledger import TrialLedger
from spelltune.sweeps.overrides import format_value, overrides_args
from spelltune.sweeps.schema import FINITE, Sweep, six_digits_within
from spelltune.sweeps.space import Space
from spelltune.sweeps.trials import (
    STATE_DIR,
    say,
    show_config,
    state_dir,
    thread_override,
)
from spelltune.training.devices import cores


def pruner_spec(sweep: Sweep, space: Space) -> dict | None:
    """Optuna's pruner for early_terminate. min_iter/max_iter count validation evaluations,
    as W&B's hyperband counts how often the metric was logged; the train stage reports to
    Optuna at optimizer steps, so the rungs become min_iter * train.eval_every steps."""
    et = sweep.early_terminate
    if et is None:
        return None
    _, flat = space.full({})
    every = flat["train.eval_every"]
    max_steps = None if "train.max_steps" in sweep.parameters else flat["train.max_steps"]
    max_evals = et.max_iter or (max_steps // every if max_steps else None)
    min_evals = et.min_iter or max(1, (max_evals or 1) // et.eta ** ((et.s or 3) - 1))
    if et.type == "median":
        return {"type": "median", "min_resource": min_evals * every, "n_startup_trials": 2, "eval_every": every}
    return {"type": "hyperband", "min_resource": min_evals * every,
            "max_resource": max_evals * every if max_evals else "auto", "reduction_factor": et.eta, "eval_every": every}


def pruner_text(spec: dict | None) -> str:
    if not spec:
        return "none"
    every = spec.get("eval_every") or 1
    first = f"step {spec['min_resource']} (evaluation {spec['min_resource'] // every}, every {every} steps)"
    if spec["type"] == "median":
        return (f"median rule: from {first} on, a trial whose value is worse than the "
                "median of earlier trials at the same step stops (after 2 trials)")
    return (f"hyperband: rungs from {first} up to step {spec['max_resource']}, "
            f"keeping the best 1/{spec['reduction_factor']} at each rung (Optuna HyperbandPruner)")


def distributions(sweep: Sweep) -> tuple[dict, dict, dict]:
    """Optuna distributions of the searched parameters, the constants, and JSON-encoded
    categorical choices (Optuna's choices must be scalars)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists, constants, encoded = {}, {}, {}
    for key, spec in sweep.parameters.items():
        d = spec.distribution
        if d == "constant":
            constants[key] = spec.value
        elif d == "categorical":
            if all(v is None or isinstance(v, (bool, int, float, str)) for v in spec.values):
                dists[key] = CategoricalDistribution(spec.values)
            else:
                dists[key] = CategoricalDistribution([json.dumps(v) for v in spec.values])
                encoded[key] = True
        elif d == "int_uniform":
            dists[key] = IntDistribution(int(spec.min), int(spec.max))
        elif d == "q_uniform":
            if all(float(x).is_integer() for x in (spec.min, spec.max, spec.q)):
                dists[key] = IntDistribution(int(spec.min), int(spec.max), step=int(spec.q))
            else:
                dists[key] = FloatDistribution(spec.min, spec.max, step=spec.q)
        else:
            dists[key] = FloatDistribution(spec.min, spec.max, log=d == "log_uniform_values")
    assert set(FINITE) | {"uniform", "log_uniform_values"} >= {s.distribution for s in sweep.parameters.values()}
    return dists, constants, encoded


def default_storage(name: str) -> str:
    return str(state_dir() / "sweeps" / f"{name}.journal")


def default_storages(repo: Path) -> list[str]:
    """The journal files of the Bayesian sweeps run in `repo` on the default storage."""
    return [str(p) for p in sorted((repo / STATE_DIR / "sweeps").glob("*.journal"))]


def absolute_storage(url: str) -> str:
    """The storage as the trial's training process (in DVC's temp workspace) must see it."""
    from spelltune.training.pruning import DB_PREFIXES

    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    if url.startswith(DB_PREFIXES):
        return url
    return str(Path(url.removeprefix("journal:")).resolve())


def shown_storage(url: str) -> str:
    """The storage URL without its password, for messages."""
    from spelltune.training.pruning import DB_PREFIXES

    if not url.startswith(DB_PREFIXES):
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)




class Skip(Exception):  # a trial not run: it breaks a constraint, or run_cap is taken
    pass


class TrialFailed(Exception):  # its `dvc exp run` failed or was interrupted
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

        from spelltune.training.pruning import DB_PREFIXES, make_pruner, open_storage

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
        # Each worker process seeds its own sampler: two processes with the same seed would
        # propose the same configurations. (Parallel TPE is not reproducible anyway; every
        # trial's params are in its DVC experiment.)
        seed = (sweep.seed * 1_000_003 + zlib.crc32(f"{self.host}:{os.getpid()}".encode())) % 2**32
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, self.cap // 2)))
        self.study = optuna.create_study(
            study_name=sweep.name, storage=self.storage, sampler=sampler, pruner=make_pruner(self.spec),
            direction=sweep.metric.goal, load_if_exists=True,
        )
        self.study_id = self.storage.get_study_id_from_name(sweep.name)
        self.ledger.attach(self.study, self.storage)
        self.dists, self.constants, self.encoded = distributions(sweep)
        self.threads = thread_override(sweep, space, args.jobs)
        self.stop = threading.Event()
        self.children: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.local = threading.local()
        self.errors: list[Exception] = []
        self.log_dir = state_dir() / "sweeps" / sweep.name
        self.log_dir.mkdir(parents=True, exist_ok=True)

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
        config = {**self.constants, **self.decode(self.suggest(trial))}
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
        return self.run_trial(trial, config, retry_of)

    def suggest(self, trial) -> dict:
        """The trial's params from the sampler (a WAITING retry: the ones it was enqueued with)."""
        D = self.optuna.distributions
        for key, d in self.dists.items():
            if isinstance(d, D.CategoricalDistribution):
                trial.suggest_categorical(key, d.choices)
            elif isinstance(d, D.IntDistribution):
                trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
            else:
                trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log)
        return trial.params

    def decode(self, params: dict) -> dict:
        out = {}
        for key, value in params.items():
            if key in self.encoded:
                value = json.loads(value)
            elif isinstance(value, float) and not isinstance(
                self.dists[key], self.optuna.distributions.CategoricalDistribution
            ):
                if self.dists[key].step is None:
                    value = six_digits_within(value, self.dists[key].low, self.dists[key].high)
            out[key] = value
        return out

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
            with self.lock:
                for proc in self.children:
                    proc.terminate()
            for w in workers:
                w.join(timeout=60)
            return 130
        code = self.report()
        return 1 if self.errors else code

    def report(self) -> int:
        TS = self.TS
        rows = [t for t in self.ledger.trials() if t.user_attrs.get("spelltune_run")]
        for t in rows:
            value = f"{self.sweep.metric.name}={t.value:.4g}" if t.value is not None else t.user_attrs.get("result", "")
            if t.state == TS.PRUNED and t.intermediate_values:
                step = max(t.intermediate_values)
                value = f"pruned at step {step} ({self.sweep.metric_key}={t.intermediate_values[step]:.4g})"
            elif t.state == TS.FAIL and not value:
                value = "interrupted"
            extra = f" (retry of {self.ledger.retry_of(t)})" if self.ledger.retry_of(t) is not None else ""
            print(f"{t.user_attrs.get('dvc_exp', '-')}  {t.state.name.lower():8s} {value}{extra}  "
                  f"{' '.join(f'{k}={v}' for k, v in (t.user_attrs.get('config') or {}).items())}")
        complete = [t for t in rows if t.state == TS.COMPLETE]
        n_pruned = sum(t.state == TS.PRUNED for t in rows)
        n_failed = sum(t.state == TS.FAIL for t in rows)
        if complete:
            best = self.study.best_trial
            print(f"best: {best.user_attrs.get('dvc_exp')} {self.sweep.metric.name}={best.value:.4g}"
                  f" (dvc exp apply {best.user_attrs.get('dvc_exp')})")
        n_counted = sum(self.ledger.counted(t) for t in rows)
        print(f"trials: {n_counted}  complete: {len(complete)}  pruned: {n_pruned}  failed: {n_failed}")
        return 0 if complete or n_pruned else 1

"""`spelltune sweep`: grid, random and Bayesian search where every trial is a DVC experiment.

    spelltune sweep plan sweep.yaml            validate; print the configurations; last line `trials: N`
    spelltune sweep run sweep.yaml [-j N]      grid/random: queue them (`dvc exp run --queue`), run the
                                               queue with N workers and wait; bayes: Optuna TPE
                                               ask-and-tell, each trial `dvc exp run --temp`
    spelltune sweep wandb-agent --k=v ...      what `wandb agent` runs: W&B's --key=value -> -S key=value

The search space is sweep.yaml (W&B's sweep schema plus `constraints` and `seed`, see
spelltune.sweeps.space). Experiments are named `<sweep>-NNN` (grid, random) and
`<sweep>-tNNN` (bayes: the Optuna trial number), so rerunning the same command skips
what already finished. See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import yaml

from spelltune.errors import error, fail
from spelltune.sweeps.space import (
    FINITE,
    METRIC_FILES,
    Space,
    Sweep,
    SweepError,
    format_value,
    load_base_params,
    load_sweep,
    overrides_args,
    parse_override,
    six_digits_within,
    wandb_problems,
)

STATE_DIR = Path(".spelltune")  # sweep state (journal, logs); ignored by git through its own .gitignore


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tool(name: str) -> str:
    """The venv's own `dvc` when we run from one, else whatever is on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def dvc(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([tool("dvc"), *args], capture_output=True, text=True, **kwargs)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def cores() -> int:
    return len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- DVC experiments


def exp_refs() -> dict[str, str]:
    """Experiments of the current commit (the baseline), by name -> git ref."""
    base = git("rev-parse", "HEAD").strip()
    prefix = f"refs/exps/{base[:2]}/{base[2:]}/"
    refs = git("for-each-ref", prefix, "--format=%(refname)").split()
    return {ref[len(prefix):]: ref for ref in refs}


def ran_with(ref: str, config: dict[str, Any]) -> bool:
    """Whether the experiment at `ref` ran with these params values (its params.yaml)."""
    proc = subprocess.run(["git", "show", f"{ref}:params.yaml"], capture_output=True, text=True)
    if proc.returncode != 0:
        return False
    params = yaml.safe_load(proc.stdout) or {}
    for key, value in config.items():
        node: Any = params
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if format_value(node) != format_value(value):
            return False
    return True


def read_exp_json(ref: str, path: str) -> dict | None:
    proc = subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return None


def _lookup(data: dict | None, key: str) -> float | None:
    if not isinstance(data, dict):
        return None
    candidates = [data.get(key), (data.get("final") or {}).get(key) if isinstance(data.get("final"), dict) else None]
    node: Any = data
    for part in key.split("/"):  # DVCLive nests keys by '/'
        node = node.get(part) if isinstance(node, dict) else None
    candidates.append(node)
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def metric_value(ref: str, metric: str) -> float | None:
    """A metric of an experiment: `file:key`, or the key looked up in eval.json, then
    summary.json (top level, then its `final`), then the DVCLive training metrics."""
    if ":" in metric:
        path, key = metric.rsplit(":", 1)
        return _lookup(read_exp_json(ref, path), key)
    for path in METRIC_FILES:
        value = _lookup(read_exp_json(ref, path), metric)
        if value is not None:
            return value
    return None


def queue_status() -> dict[str, str]:
    """`dvc queue status` as name -> Queued | Running | Success | Failed."""
    proc = dvc("queue", "status")
    status = {}
    for line in proc.stdout.splitlines()[1:]:
        parts = line.split()
        if not parts or line.startswith("Worker"):
            continue
        if len(parts) >= 4 and parts[-1] in ("Queued", "Running", "Success", "Failed"):
            status[parts[1]] = parts[-1]
    return status


# ---------------------------------------------------------------- setup shared by the commands


def load_all(args) -> tuple[Sweep, Space]:
    """The sweep file, the -S overrides and params.yaml, all checked; exit 2 on any error."""
    try:
        sweep = load_sweep(args.sweep)
        fixed = dict(parse_override(s) for s in args.set or [])
        space = Space(sweep, load_base_params(args.params), fixed)
        problems = space.check_bounds() + space.early_terminate_problems()
        if fixed:
            why = space.check({})
            if why and "params schema" in why:
                problems.append(f"-S overrides: {why}")
    except (SweepError, ValueError) as exc:
        fail(exc)
    if problems:
        for line in problems[:-1]:
            error(f"{args.sweep}: {line}")
        fail(f"{args.sweep}: {problems[-1]}")
    return sweep, space


def thread_override(sweep: Sweep, space: Space, jobs: int) -> dict[str, int]:
    """On CPU, N concurrent workers share the cores: torch threads = cores // N, set
    through `train.threads` (so it shows among the experiment's params) only when the
    user left it at 0 (= all cores) and the sweep does not set it."""
    if jobs <= 1 or "train.threads" in sweep.parameters or "train.threads" in space.fixed:
        return {}
    base = (space.base_raw.get("train") or {}).get("threads", 0)
    if base:
        return {}
    return {"train.threads": max(1, cores() // jobs)}


def show_config(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in config.items())


def configs_for(sweep: Sweep, space: Space) -> tuple[list[dict], list[str]]:
    """grid / random configurations and the notes on what was left out."""
    notes = []
    if sweep.method == "grid":
        configs, dropped = space.grid()
        for config, why in dropped:
            notes.append(f"left out: {show_config(config)}: {why}")
        if sweep.run_cap and len(configs) == sweep.run_cap:
            notes.append(f"run_cap {sweep.run_cap}: the first {sweep.run_cap} grid points")
    else:
        configs, rejected = space.random()
        if rejected:
            notes.append(f"{rejected} draws rejected by the constraints or the params schema and drawn again")
        if len(configs) < (sweep.run_cap or 0):
            notes.append(f"only {len(configs)} distinct configurations hold (run_cap {sweep.run_cap})")
    return configs, notes


# ---------------------------------------------------------------- plan


def cmd_plan(args) -> int:
    sweep, space = load_all(args)
    head = f"sweep {sweep.name!r} ({sweep.method})"
    if sweep.metric:
        head += f", metric {sweep.metric.name} ({sweep.metric.goal})"
    print(head)
    if space.fixed:
        print(f"every trial: {show_config(space.fixed)}")
    for c in sweep.constraints:
        print(f"constraint: {c}")
    for line in wandb_problems(args.sweep):
        say(f"note: {args.sweep}: {line} (`wandb sweep` only; spelltune reads it)")
    if sweep.metric and sweep.metric.name.rsplit(":", 1)[-1].startswith("test/"):
        say("warning: choosing hyperparameters on a test/ metric leaks the test split into the choice; use val/")
    if sweep.method == "bayes":
        for key, spec in sweep.parameters.items():
            print(f"  {key}: {spec.describe()}")
        if sweep.early_terminate:
            print(f"early_terminate: {pruner_text(pruner_spec(sweep, space))}")
        print("configurations are chosen adaptively by Optuna TPE, "
              "each from the results so far; constraint and schema violations are drawn again")
        print(f"trials: {sweep.run_cap}")
        return 0
    if sweep.early_terminate:
        say("warning: early_terminate applies to method bayes only (grid and random run in `dvc queue`); ignored")
    configs, notes = configs_for(sweep, space)
    for i, config in enumerate(configs, 1):
        print(f"  {sweep.name}-{i:03d}  {show_config(config)}")
    for note in notes:
        print(note)
    print(f"trials: {len(configs)}")
    return 0


# ---------------------------------------------------------------- grid and random: the DVC queue


def run_queue(sweep: Sweep, space: Space, args) -> int:
    configs, notes = configs_for(sweep, space)
    for note in notes:
        say(note)
    if sweep.early_terminate:
        say("warning: early_terminate applies to method bayes only (grid and random run in `dvc queue`); ignored")
    threads = thread_override(sweep, space, args.jobs)
    if threads:
        say(f"{args.jobs} workers on {cores()} cores: each trial gets -S train.threads={threads['train.threads']}")
    done, status = exp_refs(), queue_status()
    names = {}
    for i, config in enumerate(configs, 1):
        # `<sweep>-NNN` is the NNN-th configuration; if sweep.yaml changed since an earlier
        # run, that name may hold another configuration: never skip on the name alone.
        name, k = f"{sweep.name}-{i:03d}", 2
        while name in done and not ran_with(done[name], {**space.fixed, **config}):
            name, k = f"{sweep.name}-{i:03d}-{k}", k + 1
        names[name] = config

    def enqueue(todo: list[str]) -> None:
        for name in todo:
            overrides = {**space.fixed, **threads, **names[name]}
            proc = dvc("exp", "run", "--queue", "-n", name, *overrides_args(overrides))
            if proc.returncode != 0:
                say(f"{name}: could not queue: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
            else:
                say(f"queued {name}: {show_config(names[name])}")

    finished = [n for n in names if n in done]
    pending = [n for n in names if n not in done and status.get(n) in ("Queued", "Running")]
    for name in [n for n in names if n not in done and status.get(n) == "Failed"]:
        dvc("queue", "remove", name)  # an earlier run's failure: queue it again
    if finished:
        say(f"{len(finished)} of {len(names)} already finished (rerun skips them): {', '.join(finished)}")
    enqueue([n for n in names if n not in done and n not in pending])
    if args.no_start:
        print(f"queued: {len(names) - len(finished)}; start them with: dvc queue start -j {args.jobs}")
        return 0

    failed = wait_queue(list(names), args.jobs)
    if failed:  # one retry each, then it stays failed
        say(f"retrying once: {', '.join(failed)}")
        for name in failed:
            dvc("queue", "remove", name)
        enqueue(failed)
        failed = wait_queue(list(names), args.jobs)
    refs = exp_refs()
    key = sweep.metric.name if sweep.metric else None
    for name, config in names.items():
        state = "ok" if name in refs else "FAILED"
        value = metric_value(refs[name], key) if key and name in refs else None
        shown = f"  {key}={value:.4g}" if value is not None else ""
        print(f"{name}  {state}{shown}  {show_config(config)}")
    print(f"trials: {len(names)}  succeeded: {sum(n in refs for n in names)}  failed: {len(failed)}")
    if failed:
        say("see why with: dvc queue logs <name>")
    return 1 if failed else 0


QUEUE_POLL_S = 10


def wait_queue(names: list[str], jobs: int) -> list[str]:
    """Start the queue's workers and wait until each of `names` is done; the failed ones."""
    # The workers are daemons: they must not hold our stdout (a pipe would never close).
    subprocess.run([tool("dvc"), "queue", "start", "-j", str(jobs)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    last = None
    while True:
        status = queue_status()
        ours = {n: status.get(n, "?") for n in names}
        counts = {s: sum(v == s for v in ours.values()) for s in ("Queued", "Running", "Success", "Failed")}
        line = ", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v)
        if line != last:
            say(f"queue: {line}")
            last = line
        if not counts["Queued"] and not counts["Running"]:
            break
        if counts["Queued"] and not counts["Running"] and "0 active" in dvc("queue", "status").stdout:
            subprocess.run([tool("dvc"), "queue", "start", "-j", str(jobs)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        # Each `dvc queue status` costs a DVC start-up (~1 s of CPU): poll gently, the
        # trials need the cores.
        time.sleep(QUEUE_POLL_S)
    refs = exp_refs()
    return [n for n in names if n not in refs]


# ---------------------------------------------------------------- bayes: Optuna ask-and-tell


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


def state_dir() -> Path:
    """.spelltune/, which git ignores through its own .gitignore."""
    STATE_DIR.mkdir(exist_ok=True)
    ignore = STATE_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    return STATE_DIR


def default_storage(name: str) -> str:
    return str(state_dir() / "sweeps" / f"{name}.journal")


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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_wandb_run_id() -> str:
    """A W&B run id for one trial: its train stage creates the run, its evaluate stage adds
    the final val/test scores to the same run (spelltune.training.wandb_eval)."""
    return "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))


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
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        self.storage = open_storage(self.storage_url, heartbeat_interval=args.heartbeat_interval,
                                    grace_period=args.grace_period, on_stale=self.on_stale)
        self.spec = pruner_spec(sweep, space)
        # Each worker process seeds its own sampler: two processes with the same seed would
        # propose the same configurations. (Parallel TPE is not reproducible anyway; every
        # trial's params are in its DVC experiment.)
        self.host = socket.gethostname()
        seed = (sweep.seed * 1_000_003 + zlib.crc32(f"{self.host}:{os.getpid()}".encode())) % 2**32
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, self.cap // 2)))
        self.study = optuna.create_study(
            study_name=sweep.name, storage=self.storage, sampler=sampler, pruner=make_pruner(self.spec),
            direction=sweep.metric.goal, load_if_exists=True,
        )
        self.study_id = self.storage.get_study_id_from_name(sweep.name)
        self.dists, self.constants, self.encoded = distributions(sweep)
        self.threads = thread_override(sweep, space, args.jobs)
        self.stop = threading.Event()
        self.children: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.local = threading.local()
        self.errors: list[Exception] = []
        self.log_dir = state_dir() / "sweeps" / sweep.name
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # -- storage helpers
    def trials(self):
        return self.study.get_trials(deepcopy=False)

    def frozen(self, trial):
        return self.storage.get_trial(trial._trial_id)

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
            if t.state in (TS.COMPLETE, TS.PRUNED) or (t.state == TS.FAIL and retry and t.user_attrs.get("spelltune_run")):
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
        """Fail the trials of dead workers and enqueue each once more (WAITING)."""
        if self.database:  # Optuna's RDB heartbeat; calls on_stale for each
            self.optuna.storages.fail_stale_trials(self.study)
            return
        TS, now = self.TS, time.time()
        for t in self.trials():
            if t.state != TS.RUNNING:
                continue
            host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
            beat = t.user_attrs.get("heartbeat") or (t.datetime_start.timestamp() if t.datetime_start else now)
            here = host == self.host and pid.isdigit()
            if pid == str(os.getpid()) and host == self.host:
                continue  # one of ours: alive
            if not ((here and not pid_alive(int(pid))) or now - beat > self.args.grace_period):
                continue
            name = t.user_attrs.get("dvc_exp")
            if name and name in exp_refs():  # it had finished before the interruption: tell that
                state, value, why = self.outcome(name)
                try:
                    self.storage.set_trial_user_attr(t._trial_id, "result", why)
                    self.storage.set_trial_state_values(t._trial_id, state, [value] if state == TS.COMPLETE else None)
                    say(f"trial {t.number} ({name}) had finished before the interruption: {why}")
                except (RuntimeError, ValueError):
                    pass  # someone else told it first
                continue
            try:
                self.storage.set_trial_user_attr(t._trial_id, "result", "interrupted")
                failed = self.storage.set_trial_state_values(t._trial_id, TS.FAIL)
            except (RuntimeError, ValueError):  # UpdateFinishedTrialError: someone else failed it
                continue
            if failed:
                self.on_stale(self.study, self.storage.get_trial(t._trial_id))

    # -- results
    def outcome(self, name: str) -> tuple[Any, float | None, str]:
        """(state, value, why) of a finished experiment."""
        TS = self.TS
        ref = exp_refs().get(name)
        if ref is None:
            return TS.FAIL, None, "the experiment did not finish (no DVC experiment); see its log"
        summary = read_exp_json(ref, "metrics/summary.json") or {}
        value = metric_value(ref, self.sweep.metric.name)
        if summary.get("early_stop_reason") == "pruned":
            return TS.PRUNED, value, "pruned"
        if value is None:
            return TS.FAIL, None, f"metric {self.sweep.metric.name} not found in {', '.join(METRIC_FILES)}"
        return TS.COMPLETE, value, "complete"

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
            self.reap()  # the next ask then takes a dead worker's trial (WAITING) first
        if self.stop.is_set():
            study.stop()

    def wait_for_slot(self, trial, retry: bool) -> None:
        """Return when this trial may run; Skip when run_cap is finished (stopping this
        worker) or, for a new trial, when a retry waits (the next ask takes it). A retry
        waits its turn too: a new trial may have taken its original's slot in between."""
        TS = self.TS
        while True:
            trials = self.trials()
            taken, finished = self.slots(trials, trial.number)
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
            self.reap()

    def objective(self, trial) -> float:
        retry_of = self.retry_of(self.frozen(trial))
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
            elif isinstance(value, float) and not isinstance(self.dists[key], self.optuna.distributions.CategoricalDistribution):
                if self.dists[key].step is None:
                    value = six_digits_within(value, self.dists[key].low, self.dists[key].high)
            out[key] = value
        return out

    def run_trial(self, trial, config: dict, retry_of: int | None) -> float:
        from spelltune.training import pruning as tr

        TS = self.TS
        refs = exp_refs()
        name = f"{self.sweep.name}-t{trial.number:03d}"
        k = 2
        while name in refs:  # a name left by an earlier study of the same name: do not clash
            name, k = f"{self.sweep.name}-t{trial.number:03d}-{k}", k + 1
        overrides = {**self.space.fixed, **self.threads, **config}
        wandb_id = new_wandb_run_id()
        for key, value in {"dvc_exp": name, "worker": f"{self.host}:{os.getpid()}", "heartbeat": time.time(),
                           "config": {k: format_value(v) for k, v in config.items()}, "wandb_run_id": wandb_id}.items():
            trial.set_user_attr(key, value)
        env = {
            **os.environ,
            tr.ENV_STORAGE: absolute_storage(self.storage_url),
            tr.ENV_STUDY: self.sweep.name,
            tr.ENV_TRIAL: str(trial.number),
            tr.ENV_METRIC: self.sweep.metric_key,
            tr.ENV_PRUNER: json.dumps(self.spec),
            "WANDB_RUN_ID": wandb_id,  # train creates the run, evaluate adds its scores to it
        }
        env.pop("DVC_EXP_BASELINE_REV", None)
        cmd = [tool("dvc"), "exp", "run", "--temp", "-n", name, *overrides_args(overrides)]
        again = f" (retry of trial {retry_of})" if retry_of is not None else ""
        say(f"trial {trial.number} ({name}) started{again}: {show_config(config)}")
        log_file = self.log_dir / f"{name}.log"
        with open(log_file, "w") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
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
        if self.stop.is_set() and proc.returncode != 0:
            trial.set_user_attr("result", "interrupted")
            self.retry(self.study, self.frozen(trial))
            say(f"trial {trial.number} ({name}) interrupted; rerunning the sweep runs it again")
            raise TrialFailed("interrupted")
        if proc.returncode == 0:
            state, value, why = self.outcome(name)
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
            self.retry(self.study, self.frozen(trial))
            say(f"trial {trial.number} will be retried once")
        raise TrialFailed(why)

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
        say(f"study {self.sweep.name!r} in {shown_storage(self.storage_url)}; early termination: {pruner_text(self.spec)}")
        if self.threads:
            say(f"{self.args.jobs} workers on {cores()} cores: each trial gets -S train.threads={self.threads['train.threads']}")
        self.reap()
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
        rows = [t for t in self.trials() if t.user_attrs.get("spelltune_run")]
        for t in rows:
            value = f"{self.sweep.metric.name}={t.value:.4g}" if t.value is not None else t.user_attrs.get("result", "")
            if t.state == TS.PRUNED and t.intermediate_values:
                step = max(t.intermediate_values)
                value = f"pruned at step {step} ({self.sweep.metric_key}={t.intermediate_values[step]:.4g})"
            elif t.state == TS.FAIL and not value:
                value = "interrupted"
            extra = f" (retry of {self.retry_of(t)})" if self.retry_of(t) is not None else ""
            print(f"{t.user_attrs.get('dvc_exp', '-')}  {t.state.name.lower():8s} {value}{extra}  "
                  f"{' '.join(f'{k}={v}' for k, v in (t.user_attrs.get('config') or {}).items())}")
        complete = [t for t in rows if t.state == TS.COMPLETE]
        n_pruned = sum(t.state == TS.PRUNED for t in rows)
        n_failed = sum(t.state == TS.FAIL for t in rows)
        if complete:
            best = self.study.best_trial
            print(f"best: {best.user_attrs.get('dvc_exp')} {self.sweep.metric.name}={best.value:.4g}"
                  f" (dvc exp apply {best.user_attrs.get('dvc_exp')})")
        print(f"trials: {sum(self.counted(t) for t in rows)}  complete: {len(complete)}  pruned: {n_pruned}  failed: {n_failed}")
        return 0 if complete or n_pruned else 1


# ---------------------------------------------------------------- run


def cmd_run(args) -> int:
    sweep, space = load_all(args)
    if args.jobs < 1:
        return error("-j must be >= 1")
    if args.heartbeat_interval < 1 or args.grace_period <= args.heartbeat_interval:
        return error(f"--heartbeat-interval {args.heartbeat_interval}, --grace-period {args.grace_period}: "
                     "allowed: interval >= 1 and grace period > interval")
    # Trials (queue workers started here, bayes trial processes) inherit it: one W&B group per sweep.
    os.environ.setdefault("WANDB_RUN_GROUP", f"sweep-{sweep.name}")
    if sweep.method == "bayes":
        return BayesRunner(sweep, space, args).run()
    return run_queue(sweep, space, args)


# ---------------------------------------------------------------- W&B agent


def wandb_overrides(argv: list[str]) -> dict[str, Any]:
    """W&B's `--key=value` (or `--key value`) arguments as params overrides."""
    out, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise SweepError(f"unexpected argument {arg!r}; W&B passes --key=value")
        body = arg[2:]
        if "=" not in body:
            if i + 1 >= len(argv):
                raise SweepError(f"{arg}: no value")
            body, i = f"{body}={argv[i + 1]}", i + 1
        key, value = parse_override(body)
        out[key] = value
        i += 1
    return out


def cmd_wandb_agent(args, rest: list[str]) -> int:
    try:
        config = wandb_overrides(rest)
    except SweepError as exc:
        return error(exc)
    args.set = args.set or []
    sweep, space = load_all(args)
    why = space.check(config)
    if why:  # W&B does not know our constraints: such a run ends at once, with no metric
        say(f"skipped: {show_config(config)}: {why}")
        return 0
    run_id = os.environ.get("WANDB_RUN_ID")
    name = f"{sweep.name}-wandb-{run_id}" if run_id else f"{sweep.name}-wandb-{int(time.time())}"
    threads = {"train.threads": args.threads} if args.threads else {}
    cmd = [tool("dvc"), "exp", "run", "--temp", "-n", name, *overrides_args({**space.fixed, **threads, **config})]
    if args.dry_run:
        print(" ".join(["dvc", *cmd[1:]]))
        return 0
    say(f"W&B run {run_id or '-'} -> DVC experiment {name}")
    # W&B's early termination stops a run by SIGTERM to this process alone: pass it on to
    # the whole `dvc exp run` (its own process group), so that no stage goes on orphaned.
    proc = subprocess.Popen(cmd, start_new_session=True)

    def forward(signum, _frame):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    return proc.wait()


# ---------------------------------------------------------------- argparse


def add_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help="hyperparameter search over sweep.yaml (grid, random, bayes)",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = sweep.add_subparsers(dest="sweep_command", required=True)

    def common(p):
        p.add_argument("sweep", nargs="?", default="sweep.yaml", help="the search space (default sweep.yaml)")
        p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE",
                       help="a params override for every trial (repeatable), e.g. -S train.max_steps=50")
        p.add_argument("--params", default="params.yaml", help=argparse.SUPPRESS)

    plan = ssub.add_parser("plan", help="validate sweep.yaml and print the configurations; last line `trials: N`")
    common(plan)
    plan.set_defaults(func=cmd_plan)

    run = ssub.add_parser("run", help="run the sweep: every trial a DVC experiment")
    common(run)
    run.add_argument("-j", "--jobs", type=int, default=1, help="concurrent workers (CPU: the cores are shared)")
    run.add_argument("--no-start", action="store_true", help="grid/random: only queue (start with dvc queue start)")
    run.add_argument("--storage", help="bayes: Optuna storage, a database URL (postgresql://user:pw@host/db, "
                     "sqlite:///x.db) or a journal file path (a shared filesystem for several machines); "
                     "default .spelltune/sweeps/<name>.journal")
    run.add_argument("--heartbeat-interval", type=int, default=60, metavar="S",
                     help="bayes: each running trial's worker beats every S seconds (default %(default)s)")
    run.add_argument("--grace-period", type=int, default=180, metavar="S",
                     help="bayes: a running trial with no beat for S seconds is failed and run again by another "
                     "worker (default %(default)s)")
    run.add_argument("--push", metavar="GIT_REMOTE",
                     help="bayes: `dvc exp push GIT_REMOTE <exp>` after each trial (its outputs go to the default DVC "
                     "remote), so that every machine's trials meet in one place")
    run.set_defaults(func=cmd_run)

    agent = ssub.add_parser("wandb-agent", help="the program `wandb agent` runs: --key=value -> dvc exp run -S key=value")
    common(agent)
    agent.add_argument("--threads", type=int, default=0, help="-S train.threads for the trial (0: leave it)")
    agent.add_argument("--dry-run", action="store_true", help="print the dvc command instead of running it")
    agent.set_defaults(func=cmd_wandb_agent, wants_rest=True)

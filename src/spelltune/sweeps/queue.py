"""Grid and random sweeps: every configuration queued as a DVC experiment
(`dvc exp run --queue`) and run by the DVC queue's workers."""

from __future__ import annotations

from spelltune import store
from spelltune.repo import dvc, parse_queue_status
from spelltune.repo import run_queue as run_dvc_queue
from spelltune.sweeps.overrides import overrides_args
from spelltune.sweeps.schema import Sweep
from spelltune.sweeps.space import Space
from spelltune.sweeps.trials import ran_with, say, show_config, thread_override
from spelltune.training.devices import cores


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


def run_queue(sweep: Sweep, space: Space, args) -> int:
    configs, notes = configs_for(sweep, space)
    for note in notes:
        say(note)
    if sweep.early_terminate:
        say("warning: early_terminate applies to method bayes only (grid and random run in `dvc queue`); ignored")
    threads = thread_override(sweep, space, args.jobs)
    if threads:
        say(f"{args.jobs} workers on {cores()} cores: each trial gets -S train.threads={threads['train.threads']}")
    done, status = store.refs(), parse_queue_status(dvc("queue", "status").stdout)
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
    refs = store.refs()
    key = sweep.metric.name if sweep.metric else None
    for name, config in names.items():
        state = "ok" if name in refs else "FAILED"
        value = store.metric(refs[name], key) if key and name in refs else None
        shown = f"  {key}={value:.4g}" if value is not None else ""
        print(f"{name}  {state}{shown}  {show_config(config)}")
    print(f"trials: {len(names)}  succeeded: {sum(n in refs for n in names)}  failed: {len(failed)}")
    if failed:
        say("see why with: dvc queue logs <name>")
    return 1 if failed else 0


QUEUE_POLL_S = 10


def wait_queue(names: list[str], jobs: int) -> list[str]:
    """Start the queue's workers and wait until each of `names` is done; the failed ones."""
    last = None

    def show(status: dict[str, str]) -> None:
        nonlocal last
        counts = {s: sum(v == s for v in status.values()) for s in ("Queued", "Running", "Success", "Failed")}
        line = ", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v)
        if line != last:
            say(f"queue: {line}")
            last = line

    run_dvc_queue(jobs, names, poll_seconds=QUEUE_POLL_S, on_status=show)
    refs = store.refs()
    return [n for n in names if n not in refs]

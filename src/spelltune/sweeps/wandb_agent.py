"""`spelltune sweep wandb-agent`: the program `wandb agent` runs; W&B's --key=value arguments become `dvc exp run -S "
"key=value`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

from spelltune.errors import error
from spelltune.repo import tool
from spelltune.sweeps.overrides import SweepError, overrides_args, parse_override
from spelltune.sweeps.trials import load_all, say, show_config


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

"""What the sweep runners share: each trial is a DVC experiment of the current commit, with
its params and its metric read back through spelltune.store, and its share of the cores."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from spelltune import store
from spelltune.errors import error, fail
from spelltune.params import get_dotted
from spelltune.sweeps.overrides import SweepError, format_value, parse_override
from spelltune.sweeps.schema import Sweep, load_sweep
from spelltune.sweeps.space import Space, load_base_params
from spelltune.training.devices import cores

STATE_DIR = Path(".spelltune")  # sweep state (journal, logs); ignored by git through its own .gitignore


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ran_with(ref: str, config: dict[str, Any]) -> bool:
    """Whether the experiment at `ref` ran with these params values (its params.yaml)."""
    if store.read(ref, "params.yaml") is None:
        return False
    params = store.read_yaml(ref, "params.yaml")
    return all(format_value(get_dotted(params, key, None)) == format_value(value) for key, value in config.items())


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


def state_dir() -> Path:
    """.spelltune/, which git ignores through its own .gitignore."""
    STATE_DIR.mkdir(exist_ok=True)
    ignore = STATE_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    return STATE_DIR


def load_all(args) -> tuple[Sweep, Space]:
    """The sweep file, the -S overrides and params.yaml, all checked; exit 2 on any error."""
    try:
        sweep = load_sweep(args.sweep)
        fixed = dict(parse_override(s) for s in args.set or [])
        if "eval.test" not in sweep.parameters:  # trials choose on validation; test is for the finalists
            fixed.setdefault("eval.test", False)
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

"""What the sweep runners share: each trial is a DVC experiment of the current commit, with
its params and its metric read back from git, and its share of the cores."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from spelltune.errors import error, fail
from spelltune.metric_names import METRIC_FILES
from spelltune.repo import git, git_show
from spelltune.sweeps.overrides import SweepError, format_value, parse_override
from spelltune.sweeps.schema import Sweep, load_sweep
from spelltune.sweeps.space import Space, load_base_params
from spelltune.training.devices import cores

STATE_DIR = Path(".spelltune")  # sweep state (journal, logs); ignored by git through its own .gitignore


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def exp_refs() -> dict[str, str]:
    """Experiments of the current commit (the baseline), by name -> git ref."""
    base = git("rev-parse", "HEAD").strip()
    prefix = f"refs/exps/{base[:2]}/{base[2:]}/"
    refs = git("for-each-ref", prefix, "--format=%(refname)").split()
    return {ref[len(prefix):]: ref for ref in refs}


def ran_with(ref: str, config: dict[str, Any]) -> bool:
    """Whether the experiment at `ref` ran with these params values (its params.yaml)."""
    text = git_show(ref, "params.yaml")
    if text is None:
        return False
    params = yaml.safe_load(text) or {}
    for key, value in config.items():
        node: Any = params
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if format_value(node) != format_value(value):
            return False
    return True


def read_exp_json(ref: str, path: str) -> dict | None:
    text = git_show(ref, path)
    if text is None:
        return None
    try:
        return json.loads(text)
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

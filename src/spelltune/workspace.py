"""One `dvc exp run` at a time in a workspace, its params.yaml kept as it started, and the
stage pin (`ParamsPin`: what a stage read must still hold when DVC records its outputs).

DVC locks only the paths of the stage it is running, and a second `dvc exp run` writes its
-S values into params.yaml before DVC's lock refuses it (or, while the first run is in a
stage its validate stage does not collide with, it is not refused at all). So:

- the validate stage claims the workspace for the `dvc` process that runs it, with the
  params.yaml it validated; a second run's validate, finding a live claim of another `dvc`,
  puts params.yaml back and stops its own run with one line;
- each later stage of the claiming run (`keep_params`) finds params.yaml as the run
  started it, before it reads it and before it exits (DVC records params.yaml after the
  command), restoring it where another command changed it; the changed file is kept
  beside it, so that no edit is lost;
- the second run's DVC also sets, then removes, the git refs through which the first one
  commits its experiment at the end (`refs/exps/exec/*`, shared by every workspace run of
  DVC 3); they are recorded with the claim and put back in the same way.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from spelltune.errors import fail
from spelltune.params import (
    PARAMS_FILE,
    SECTIONS,
    Params,
    ParamsError,
    check_raw,
    flatten,
    get_dotted,
    read_raw,
    stage_params,
)
from spelltune.paths import PIPELINE_CLAIM as CLAIM


def _driver() -> psutil.Process | None:
    """The nearest `dvc` process above this one; None for a stage run by hand."""
    with contextlib.suppress(psutil.Error):
        for p in psutil.Process().parents():
            with contextlib.suppress(psutil.Error):
                cmd = p.cmdline()
                if any(Path(arg).name == "dvc" for arg in cmd[:2]) or cmd[1:3] == ["-m", "dvc"]:
                    return p
    return None


def run_by_dvc() -> bool:
    """Whether this stage runs inside `dvc repro` / `dvc exp run` (not by hand)."""
    return _driver() is not None


# DVC's refs of the experiment running in the workspace (dvc/repo/experiments/refs.py);
# EXEC_BRANCH is symbolic.
EXEC_REFS = tuple(f"refs/exps/exec/{name}" for name in ("EXEC_BASELINE", "EXEC_HEAD", "EXEC_MERGE"))
EXEC_BRANCH = "refs/exps/exec/EXEC_BRANCH"


def _git(*args: str) -> str | None:
    proc = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _exec_refs() -> dict[str, str | None]:
    refs = {ref: _git("rev-parse", "--verify", "-q", ref) for ref in EXEC_REFS}
    return {**refs, EXEC_BRANCH: _git("symbolic-ref", "-q", EXEC_BRANCH)}


def _restore_exec_refs(recorded: dict[str, str | None]) -> list[str]:
    """Put DVC's refs back as recorded; the names of those that had changed."""
    now = _exec_refs()
    changed = [ref for ref, was in recorded.items() if now.get(ref) != was]
    for ref in changed:
        command = "symbolic-ref" if ref == EXEC_BRANCH else "update-ref"
        if recorded[ref]:
            _git(command, ref, recorded[ref])
        else:
            _git(command, "-d", ref)
    return [ref.rsplit("/", 1)[1] for ref in changed]


def _live_claim() -> dict | None:
    try:
        held = json.loads(CLAIM.read_text())
        alive = abs(psutil.Process(held["pid"]).create_time() - held["started"]) < 1
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    return held if alive else None


def _mine(held: dict | None, me: psutil.Process | None) -> bool:
    return held is not None and me is not None and held["pid"] == me.pid


def claim(params_file: Path = Path(PARAMS_FILE)) -> None:
    """The validate stage's claim; ParamsError when another live `dvc` holds the workspace."""
    me = _driver()
    if me is None:
        return
    held = _live_claim()
    if held and not _mine(held, me):
        restored = ""
        if params_file.read_text() != held["params"]:
            params_file.write_text(held["params"])
            restored = "; params.yaml is back to that run's values (this run's -S values are not kept)"
        since = time.strftime("%H:%M:%S", time.localtime(held["started"]))
        raise ParamsError(f"another `dvc exp run` (pid {held['pid']}, since {since}) is running in this workspace"
                          f"{restored}: run this one when it ends, or queue it (`dvc exp run --queue ...`, "
                          "then `dvc queue start`)")
    CLAIM.parent.mkdir(parents=True, exist_ok=True)
    CLAIM.write_text(json.dumps({"pid": me.pid, "started": me.create_time(), "params": params_file.read_text(),
                                 "refs": _exec_refs()}))


def keep_params(params_file: Path = Path(PARAMS_FILE)) -> None:
    """In a claimed run: params.yaml and DVC's refs back as the run's validate recorded them
    where another command changed them (that params.yaml kept as params.yaml.changed), with
    a warning line for each. Outside one: nothing."""
    held = _live_claim()
    if not _mine(held, _driver()):
        return
    now = params_file.read_text() if params_file.exists() else None
    if now != held["params"]:
        kept = params_file.with_name(params_file.name + ".changed")
        if now is not None:
            kept.write_text(now)
        params_file.write_text(held["params"])
        print(f"warning: {params_file} was changed by another command during this `dvc exp run` (a second "
              f"`dvc exp run`?); restored to this run's values, the changed file kept as {kept}", flush=True)
    refs = _restore_exec_refs(held.get("refs") or {})
    if refs:
        print(f"warning: another `dvc exp run` changed DVC's refs of this run ({', '.join(refs)}); put back",
              flush=True)


def restore_hint(params_file: Path = Path(PARAMS_FILE)) -> str:
    """For validate's error line inside `dvc exp run`: DVC has written the run's -S values
    into params.yaml and leaves them there, where `git status` may not show them (same size,
    fresh stat data), so say how to get the committed file back."""
    if _driver() is None:
        return ""
    committed = _git("show", f"HEAD:{params_file}")
    if committed is None or committed == params_file.read_text().strip():
        return ""
    return (f" ({params_file} keeps this run's -S values: `git checkout HEAD -- {params_file}` restores "
            "the committed one)")


class ParamsPin:
    """The params a stage read when it started, to check they still hold before it records
    its outputs. DVC writes a stage's params into dvc.lock and its run cache from
    params.yaml *after* the command exits; a second `dvc exp run` in the same workspace
    writes its -S values into params.yaml before DVC's lock refuses it, so a stage that
    exits 0 then would have its outputs recorded (and served from the run cache) under
    params they were not made with."""

    MISSING = "<missing>"

    def __init__(self, stage: str, raw: dict, path: Path):
        self.stage, self.path = stage, path
        # The keys dvc.yaml records for this stage; the whole file without a dvc.yaml.
        self.keys = stage_params(path.parent / "dvc.yaml", stage) or list(SECTIONS)
        self.values = self._values(raw)

    def _values(self, raw: dict) -> dict:
        out = {}
        for key in self.keys:
            out.update(flatten({key: get_dotted(raw, key, self.MISSING)}, keep_empty=True))
        return out

    def changed(self) -> list[str]:
        """`key: before -> now` for each key this stage read that params.yaml no longer holds."""
        try:
            now = self._values(yaml.safe_load(self.path.read_text()) or {})
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            return [f"unreadable ({type(exc).__name__})"]
        return [
            f"{key}: {self.values.get(key, self.MISSING)!r} -> {now.get(key, self.MISSING)!r}"
            for key in sorted(set(self.values) | set(now))
            if self.values.get(key, self.MISSING) != now.get(key, self.MISSING)
        ]

    def check_or_exit(self) -> None:
        """In a `dvc exp run` that claimed the workspace: params.yaml back to that run's
        values (spelltune/workspace.py). Otherwise exit 3 with one line when params.yaml
        changed under this stage, so that DVC neither records nor caches its outputs."""
        keep_params(self.path)
        changed = self.changed()
        if changed:
            print(
                f"error: {self.path} changed while stage {self.stage} ran ({'; '.join(changed)}): another "
                "command wrote it (two `dvc exp run` in one workspace?); this stage's outputs are not recorded, "
                "rerun when that command is done",
                file=sys.stderr,
            )
            raise SystemExit(3)


def load_pinned_or_exit(stage: str, path: str | Path = PARAMS_FILE) -> tuple[Params, ParamsPin]:
    """load_or_exit, plus the pin of what this stage read (from the same read of the file),
    which in a claimed `dvc exp run` is params.yaml as that run validated it."""
    path = Path(path)
    keep_params(path)
    try:
        raw = read_raw(path)
        return check_raw(raw, path), ParamsPin(stage, raw, path)
    except ParamsError as exc:
        fail(exc)

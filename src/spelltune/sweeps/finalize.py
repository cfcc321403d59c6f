"""`spelltune sweep finalize`: the test split, read once, for the experiments a sweep chose.

Sweep trials score validation and the vocabulary only (`eval.test: false`): test must not
steer the choice. Finalizing an experiment applies it to the workspace (`dvc exp apply`,
its params, lock and outputs) and runs it again as `<name>-test` with `eval.test: true`:
prepare and train are up to date against its own dvc.lock, so only evaluate and report run
(not `--temp`: DVC's experiment runs do not fill the run cache, so a temporary copy would
train again). The workspace then holds the last finalist. A finalist already finalized is
shown, not scored again.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from spelltune import store
from spelltune.params import flatten
from spelltune.repo import tool
from spelltune.sweeps.overrides import overrides_args
from spelltune.sweeps.trials import say

SUFFIX = "-test"
SHOWN = ("test/spelling_exact_match", "test/letter_position_accuracy", "test/common/spelling_exact_match")


class FinalizeError(ValueError):
    """A finalist that cannot be scored here, phrased as the line the user sees."""


def ranked_trials(sweep_name: str, metric: str, maximize: bool, repo: Path | None = None) -> list[str]:
    """The sweep's finished trials of HEAD (`<sweep>-NNN`, `<sweep>-tNNN`), best first by `metric`."""
    found = []
    for name, ref in store.refs(repo).items():
        if name.startswith(f"{sweep_name}-") and not name.endswith(SUFFIX):
            value = store.metric(ref, metric, repo)
            if value is not None:
                found.append((value, name))
    return [name for _, name in sorted(found, key=lambda t: (-t[0] if maximize else t[0], t[1]))]


def overrides(name: str, repo: Path | None = None) -> dict:
    """What `name` set beyond HEAD's params.yaml, and eval.test; refused when `name` was not
    run on HEAD (its test score must measure the code it was trained with)."""
    rev = store.resolve(name, repo)
    parent = subprocess.run(["git", "rev-parse", f"{rev}^"], cwd=repo, capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    if parent != head:
        raise FinalizeError(f"{name}: it was run on commit {parent[:7]}, the workspace is at {head[:7]}: "
                            f"`git checkout {parent[:7]}` first, so that test scores the code it trained with")
    mine = flatten(store.read_yaml(rev, "params.yaml", repo))
    base = flatten(store.read_yaml("HEAD", "params.yaml", repo))
    return {**{k: v for k, v in mine.items() if base.get(k) != v}, "eval.test": True}


def _dvc(*args: str, repo: Path | None, what: str) -> str:
    proc = subprocess.run([tool("dvc"), *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FinalizeError(f"{what}: `dvc {' '.join(args[:2])}` failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return proc.stdout + proc.stderr


def finalize(names: list[str], repo: Path | None = None) -> dict[str, dict]:
    """Score each experiment on test once; {name: its test scores}."""
    done = store.refs(repo)
    todo = [name for name in names if f"{name}{SUFFIX}" not in done]
    if todo:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True).stdout.strip()
        if dirty:
            raise FinalizeError(f"the workspace has uncommitted changes ({dirty.splitlines()[0].strip()}, ...): "
                                "finalize applies each finalist to it; commit or stash them first")
    out = {}
    for name in names:
        final = f"{name}{SUFFIX}"
        if name in todo:
            test = overrides(name, repo)["eval.test"]
            say(f"{name}: scoring test as {final} (its training is kept: only evaluate and report run)")
            _dvc("exp", "apply", name, repo=repo, what=name)
            ran = _dvc("exp", "run", "-n", final, *overrides_args({"eval.test": test}), repo=repo, what=final)
            if "Running stage 'train'" in ran:
                say(f"note: {final}: {name}'s training was not up to date here, so it was trained again")
        else:
            say(f"{name}: already scored on test ({final})")
        rev = store.resolve(final, repo)
        out[name] = {m: store.metric(rev, f"metrics/eval.json:{m}", repo) for m in SHOWN}
    if todo:
        say(f"the workspace holds {todo[-1]}{SUFFIX} now; `git checkout HEAD -- . && dvc checkout` goes back")
    return out

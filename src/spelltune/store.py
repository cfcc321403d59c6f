"""The experiment store: the one way the lab (sweeps, compare, significance, the dashboard,
use and export, the notebooks) reads experiments back.

Each finished experiment is a git commit (a DVC exp ref `refs/exps/<2 hex>/<38 hex>/<name>`,
a baseline commit, or the workspace) whose small outputs the pipeline git-tracks
(metrics/*.json, the per-item predictions, the DVCLive curves); its large outputs (the
adapter, the base model) are in the DVC cache, read through DVC's own filesystem.

    refs()                          experiments of HEAD, name -> ref
    resolve(name)                   an experiment's commit, by name or git revision
    read(rev, path), read_json(...) a git-tracked output ("workspace": from disk)
    metric(rev, "val/loss")         one metric, looked up in METRIC_FILES
    scores(rev)                     every number of SCORE_FILES, named FILE:KEY
    eval_set(rev)                   what makes two experiments' scores comparable
    exp_show()                      `dvc exp show --json`: names, params, states
    head()                          the workspace's commit
    filesystem(rev)                 DVC's filesystem at that commit (the DVC cache)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from spelltune.metric_names import METRIC_FILES
from spelltune.params import flatten
from spelltune.repo import git_show

WORKSPACE = "workspace"
EVAL_FILE = "metrics/eval.json"
# The scores compared, named FILE:KEY. Not DVC metrics (those are the few columns of
# metrics/headline.json): read from each experiment's commit, where the pipeline git-tracks them.
SCORE_FILES = (EVAL_FILE, "metrics/base.json", "metrics/train.json")
# The outputs whose content hashes (dvc.lock's) identify the base model and the held-out items.
EVAL_SET_OUTS = ("data/base_model", "data/validation.jsonl", "data/test.jsonl")


class StoreError(ValueError):
    """An experiment that cannot be found or read, as one line."""


def _git(repo: Path | None, *args: str) -> str | None:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _exp_refs(repo: Path | None) -> list[tuple[str, str, str]]:
    """(sha, ref, name) of every experiment ref; refs/exps/exec/* are DVC's own."""
    listed = _git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps") or ""
    out = []
    for sha, ref in (line.split(" ", 1) for line in listed.splitlines()):
        parts = ref.split("/")
        if len(parts) == 5 and parts[2] != "exec":
            out.append((sha, ref, parts[-1]))
    return out


def refs(repo: Path | None = None, baseline: str = "HEAD") -> dict[str, str]:
    """The experiments of one commit (default: HEAD), by name -> git ref."""
    base = _git(repo, "rev-parse", baseline) or ""
    prefix = f"refs/exps/{base[:2]}/{base[2:]}/"
    return {name: ref for _, ref, name in _exp_refs(repo) if ref.startswith(prefix)}


def head(repo: Path | None = None) -> str | None:
    """The short commit of HEAD; None outside a git repository."""
    return _git(repo, "rev-parse", "--short", "HEAD")


def resolve(name: str, repo: Path | None = None) -> str:
    """An experiment's commit, by its name (`dvc exp show`'s, of any baseline), or any git revision."""
    known = _exp_refs(repo)
    hits = sorted({sha for sha, _, exp in known if exp == name})
    if len(hits) > 1:
        raise StoreError(f"{len(hits)} experiments have this name; give its commit instead "
                         f"({', '.join(h[:7] for h in hits)})")
    if hits:
        return hits[0]
    sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    if sha:
        return sha
    names = sorted({exp for _, _, exp in known})
    raise StoreError(f"no such experiment or git revision in {Path(repo or '.').resolve()}; "
                     f"experiments: {', '.join(names) or '(none)'}")


def read(rev: str, path: str, repo: Path | None = None) -> str | None:
    """A git-tracked output of one commit; the workspace's from disk. None where it has none."""
    if rev == WORKSPACE:
        file = Path(repo or ".") / path
        return file.read_text() if file.is_file() else None
    return git_show(rev, path, cwd=repo)


def read_json(rev: str, path: str, repo: Path | None = None) -> dict | None:
    try:
        return json.loads(read(rev, path, repo) or "null")
    except json.JSONDecodeError:
        return None


def read_yaml(rev: str, path: str, repo: Path | None = None) -> dict:
    try:
        return yaml.safe_load(read(rev, path, repo) or "") or {}
    except yaml.YAMLError:
        return {}


def _number(data: Any, key: str) -> float | None:
    """`key` in one metrics file: at the top level, under `final` (summary.json), or nested
    by '/' (DVCLive's metrics.json)."""
    if not isinstance(data, dict):
        return None
    final = data.get("final")
    candidates = [data.get(key), final.get(key) if isinstance(final, dict) else None]
    node: Any = data
    for part in key.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    candidates.append(node)
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def metric(rev: str, name: str, repo: Path | None = None) -> float | None:
    """A metric of an experiment: `file:key`, or the key looked up in METRIC_FILES in order."""
    if ":" in name:
        path, key = name.rsplit(":", 1)
        return _number(read_json(rev, path, repo), key)
    for path in METRIC_FILES:
        value = _number(read_json(rev, path, repo), name)
        if value is not None:
            return value
    return None


def scores(rev: str, repo: Path | None = None) -> dict[str, float]:
    """The numbers of SCORE_FILES at one revision, named FILE:KEY."""
    out = {}
    for file in SCORE_FILES:
        content = read_json(rev, file, repo)
        for key, value in flatten(content if isinstance(content, dict) else {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{file}:{key}"] = value
    return out


def eval_set(rev: str, repo: Path | None = None) -> str:
    """What makes two experiments' scores comparable: the base model and the held-out items
    they were scored on, as one short hash of the content hashes dvc.lock records for
    EVAL_SET_OUTS ("unknown" without them)."""
    stages = read_yaml(rev, "dvc.lock", repo).get("stages") or {}
    outs = {out["path"]: out.get("md5") for stage in stages.values() for out in stage.get("outs") or []}
    parts = [outs.get(path) for path in EVAL_SET_OUTS]
    return hashlib.sha1(" ".join(parts).encode()).hexdigest()[:8] if all(parts) else "unknown"


def exp_show(repo: Path | None = None, all_commits: bool = False, rev: str | None = None) -> list[dict]:
    """`dvc exp show --json`: the experiments, their params and states. Not dvc.api.exp_show:
    it has no --all-commits."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else []),
           *(["--rev", rev] if rev else [])]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StoreError(f"`dvc exp show` failed in {Path(repo or '.').resolve()}: "
                         f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return json.loads(proc.stdout or "[]")


def filesystem(rev: str, repo: Path | None = None):
    """DVC's filesystem at a commit: its DVC-tracked outputs from the local cache."""
    from dvc.api import DVCFileSystem

    return DVCFileSystem(str(Path(repo or ".").resolve()), rev=rev)

"""spelltune.store on a real git repository: experiment refs made the way DVC names them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from spelltune import store


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, files: dict[str, object], message: str) -> str:
    for path, content in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(content if isinstance(content, str) else json.dumps(content))
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


def exp_ref(repo: Path, baseline: str, name: str, sha: str) -> None:
    git(repo, "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}", sha)


LOCK = {"stages": {"prepare": {"outs": [{"path": "data/validation.jsonl", "md5": "v1"},
                                        {"path": "data/test.jsonl", "md5": "t1"}]},
                   "prepare_model": {"outs": [{"path": "data/base_model", "md5": "b1.dir"}]}}}


@pytest.fixture
def repo(tmp_path) -> Path:
    git(tmp_path, "init", "-q")
    return tmp_path


def test_experiments_are_found_by_name_and_read_back(repo):
    base = commit(repo, {"params.yaml": "train:\n  lr: 0.003\n", "dvc.lock": json.dumps(LOCK)}, "baseline")
    exp = commit(repo, {"metrics/eval.json": {"val/loss": 1.5, "test/x": True},
                        "metrics/summary.json": {"final": {"train/loss": 0.7}},
                        "metrics/train/metrics.json": {"val": {"perplexity": 4.0}}}, "exp")
    git(repo, "reset", "-q", "--hard", base)
    exp_ref(repo, base, "first", exp)
    git(repo, "update-ref", "refs/exps/exec/EXEC_HEAD", exp)  # DVC's own ref: not an experiment

    assert store.refs(repo) == {"first": f"refs/exps/{base[:2]}/{base[2:]}/first"}
    assert store.resolve("first", repo) == exp and store.resolve(base[:7], repo) == base
    assert store.metric(exp, "val/loss", repo) == 1.5
    assert store.metric(exp, "train/loss", repo) == 0.7  # summary.json's `final`
    assert store.metric(exp, "val/perplexity", repo) == 4.0  # DVCLive's nesting by '/'
    assert store.metric(exp, "metrics/eval.json:val/loss", repo) == 1.5
    assert store.metric(exp, "test/x", repo) is None  # a bool is not a score
    assert store.scores(exp, repo) == {"metrics/eval.json:val/loss": 1.5}
    assert store.read(exp, "nope.json", repo) is None and store.read_json(exp, "nope.json", repo) is None
    assert store.read(store.WORKSPACE, "params.yaml", repo).startswith("train:")
    assert store.eval_set(base, repo) == store.eval_set(exp, repo) != "unknown"
    assert store.head(repo) == base[:7]


def test_an_unknown_or_ambiguous_name_is_one_line(repo):
    base = commit(repo, {"a": "1"}, "one")
    other = commit(repo, {"a": "2"}, "two")
    exp_ref(repo, base, "twice", base)
    exp_ref(repo, other, "twice", other)
    with pytest.raises(store.StoreError, match="2 experiments have this name"):
        store.resolve("twice", repo)
    with pytest.raises(store.StoreError, match="no such experiment or git revision .*experiments: twice"):
        store.resolve("nope", repo)


def test_eval_set_changes_with_the_held_out_items_and_is_unknown_without_a_lock(repo):
    first = commit(repo, {"dvc.lock": json.dumps(LOCK)}, "one")
    LOCK2 = json.loads(json.dumps(LOCK))
    LOCK2["stages"]["prepare"]["outs"][1]["md5"] = "t2"
    second = commit(repo, {"dvc.lock": json.dumps(LOCK2)}, "two")
    assert store.eval_set(first, repo) != store.eval_set(second, repo)
    third = commit(repo, {"dvc.lock": "not: [yaml"}, "three")
    assert store.eval_set(third, repo) == "unknown"

"""The training monitor's phase line, on a real git repository with curve files: a queued
run that has not started shows no stale baseline numbers, and evaluation is not silence."""

from __future__ import annotations

from pathlib import Path

from conftest import git_commit_all
from spelltune.experiments.monitor import phase, status_line
from spelltune.experiments.runs import CURVES_DIR, read_curves_dir

LOSS = "timestamp\tstep\tloss\n1\t10\t2.5\n2\t320\t0.4\n"
DONE = "timestamp\tstep\tcompletion_pct\n1\t10\t3.1\n2\t320\t100.0\n"


def write_curves(root: Path, loss: str = LOSS, progress: str = DONE) -> Path:
    curves = root / CURVES_DIR
    for name, text in (("train/loss.tsv", loss), ("progress/completion_pct.tsv", progress)):
        (curves / name).parent.mkdir(parents=True, exist_ok=True)
        (curves / name).write_text(text)
    return curves


def test_a_queued_run_before_training_and_a_run_that_evaluates_say_so(tmp_path):
    repo = tmp_path / "repo"
    write_curves(repo)
    (repo / "metrics" / "eval.json").write_text("{}")
    git_commit_all(repo)  # the baseline's finished run: step 320, 100 %
    assert phase(repo, "workspace") == ""  # finished and evaluated

    queued = repo / ".dvc" / "tmp" / "exps" / "tmpq1"
    write_curves(queued)  # DVC's copy of the commit, before the train stage replaces it
    now = phase(repo, "queued run in tmpq1")
    assert now.startswith("waiting for its train stage")
    assert status_line(read_curves_dir(queued / CURVES_DIR), now).startswith("waiting for its train stage")

    write_curves(queued, loss="timestamp\tstep\tloss\n1\t10\t2.6\n",
                 progress="timestamp\tstep\tcompletion_pct\n1\t10\t3.1\n")
    assert phase(repo, "queued run in tmpq1") == ""  # training: the curves tell it

    (repo / "metrics" / "eval.json").unlink()  # the evaluate stage removed it and is running
    assert phase(repo, "workspace").startswith("training done, evaluating")

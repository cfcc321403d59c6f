"""The dashboard's view of a queued run (experiments/dashboard.py), on the function each refresh
calls. (The dashboard live, in Chromium: e2e/test_dashboard.py.)"""

from __future__ import annotations

from conftest import copy_project, git_commit_all
from spelltune.experiments.runs import CURVES_DIR

METRIC = "val/letter_position_accuracy"  # as e2e/test_dashboard.py's


def test_a_training_queued_run_is_running_with_its_curve_so_far(tmp_path):
    """A queued run's executor that is training: Running, with the steps its temporary
    workspace's curve has (a cut last line skipped). Seen live only when a refresh falls
    inside the run, so checked here on the function the refresh calls."""
    from spelltune.experiments.dashboard import _outcome

    repo, root = tmp_path / "repo", tmp_path / "executor"
    copy_project(repo)
    git_commit_all(repo)
    curve = root / CURVES_DIR / f"{METRIC}.tsv"
    curve.parent.mkdir(parents=True)
    curve.write_text("step\tletter_position_accuracy\n60\t0.25\n120\t0.5\n18")
    state_name, value, points = _outcome(repo, {"rev": "0" * 40}, {"state": "running", "local": {"root": str(root)}},
                                         METRIC)
    assert (state_name, value) == ("RUNNING", None)
    assert dict(zip(points["step"], points["value"])) == {60: 0.25, 120: 0.5}
    queued = _outcome(repo, {"rev": "0" * 40}, {"state": "queued", "local": {"root": None}}, METRIC)
    assert queued == ("WAITING", None, None)

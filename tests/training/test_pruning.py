"""A sweep trial's reporter (training/pruning.py) against a real Optuna study."""

from __future__ import annotations

import json

import pytest


def test_reporter_from_env_is_none_outside_a_sweep():
    from spelltune.training.pruning import reporter_from_env

    assert reporter_from_env({}) is None


@pytest.mark.parametrize("pruner", [
    {"type": "hyperband", "min_resource": 1, "max_resource": 4, "reduction_factor": 2},
    {"type": "median", "min_resource": 1, "n_startup_trials": 2},
])
def test_reporter_prunes_a_trial_behind_at_a_rung(tmp_path, pruner):
    import optuna

    from spelltune import handoff
    from spelltune.training import pruning as tr

    storage = str(tmp_path / "s.journal")
    study = optuna.create_study(study_name="st", storage=tr.open_storage(storage), direction="minimize",
                                pruner=tr.make_pruner(pruner))
    env = {handoff.OPTUNA_STORAGE: storage, handoff.STUDY: "st", handoff.METRIC: "val/loss",
           handoff.PRUNER: json.dumps(pruner)}
    outcomes = []
    for loss in (1.0, 0.9, 0.8, 0.7, 5.0, 6.0, 7.0, 8.0):  # good trials first, then bad ones
        trial = study.ask()
        reporter = tr.reporter_from_env({**env, handoff.TRIAL_NUMBER: str(trial.number)})
        assert reporter.number == trial.number
        pruned = False
        for step in (1, 2, 3, 4):
            if reporter.should_prune(step, {"val/loss": loss, "val/perplexity": 3.0}):
                pruned = True
                break
        study.tell(trial, state=optuna.trial.TrialState.PRUNED) if pruned else study.tell(trial, loss)
        outcomes.append(pruned)
    assert not any(outcomes[:2]) and any(outcomes[4:])
    assert not reporter.should_prune.__self__.value({"val/perplexity": 1.0})  # metric absent: None


def test_reporter_without_the_metric_never_prunes(tmp_path):
    import optuna

    from spelltune import handoff
    from spelltune.training import pruning as tr

    storage = str(tmp_path / "s.journal")
    study = optuna.create_study(study_name="st", storage=tr.open_storage(storage))
    trial = study.ask()
    reporter = tr.reporter_from_env(
        {
            handoff.OPTUNA_STORAGE: storage,
            handoff.STUDY: "st",
            handoff.TRIAL_NUMBER: str(trial.number),
            handoff.METRIC: "val/spelling_exact_match",
            handoff.PRUNER: json.dumps({"type": "median"}),
        }
    )
    assert reporter.should_prune(5, {"val/loss": 1.0}) is False
    # `test/x` as the sweep metric: the same metric on validation is what training reports
    reporter.metric = "test/letter_position_accuracy"
    assert reporter.value({"val/letter_position_accuracy": 0.5}) == 0.5

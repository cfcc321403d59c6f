"""sweep.yaml validation, the configurations a sweep runs, W&B agent arguments, and the
trial reporter against a real Optuna study (no DVC runs here: see test_sweep_e2e.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from spelltune.sweeps.constraints import Constraint
from spelltune.sweeps.overrides import SweepError, format_value, parse_override
from spelltune.sweeps.schema import parse_sweep
from spelltune.sweeps.space import Space, load_base_params
from spelltune.sweeps.trials import thread_override
from spelltune.sweeps.wandb_agent import wandb_overrides

BASE = load_base_params(ROOT / "params.yaml")


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spelltune.cli", *args], cwd=cwd, capture_output=True, text=True)


def write(tmp_path: Path, sweep: dict | str) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(sweep if isinstance(sweep, str) else yaml.safe_dump(sweep, sort_keys=False))
    return str(path)


def test_the_repository_sweep_yaml_plans():
    proc = cli("sweep", "plan", "sweep.yaml")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    sweep = yaml.safe_load((ROOT / "sweep.yaml").read_text())
    assert lines[-1] == f"trials: {sweep['run_cap']}"
    assert "adaptively" in proc.stdout and "hyperband" in proc.stdout


def test_bad_sweep_file_one_line_per_error_and_exit_2(tmp_path):
    path = write(tmp_path, {
        "method": "grud",
        "metric": {"name": "val/loss", "goal": "up"},
        "parameters": {
            "train.lrr": {"values": [1]},
            "train.lr": {"distribution": "log_uniform", "min": -4, "max": -2},
            "lora.dropout": {"distribution": "uniform", "min": 0.5},
        },
        "constraints": ["lora.alpha >= lora.rr", "__import__('os')"],
        "extra": 1,
    })
    proc = cli("sweep", "plan", path)
    assert proc.returncode == 2 and proc.stdout == ""
    err = proc.stderr
    assert "method = 'grud': allowed: 'grid', 'random' or 'bayes'" in err
    assert "metric.goal = 'up': allowed: 'minimize' or 'maximize'" in err
    assert "parameters.train.lrr = 'train.lrr': unknown params key; allowed in train: train.lr," in err
    assert (
        "parameters.train.lr.distribution = 'log_uniform': unsupported distribution" in err
        and "log_uniform_values" in err
    )
    assert "parameters.lora.dropout" in err and "uniform needs min and max" in err
    assert "constraints.0 = 'lora.alpha >= lora.rr'" in err and "lora.rr: unknown params key" in err
    assert "constraints.1" in err and "is not allowed" in err
    assert "extra = 1: unknown key; allowed: method, metric, parameters" in err
    assert len(err.strip().splitlines()) == 8


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"method": "random", "parameters": {"lora.r": {"values": [4]}}}, "method random needs run_cap"),
        ({"method": "bayes", "run_cap": 2, "parameters": {"lora.r": {"values": [4]}}}, "method bayes needs metric"),
        ({"method": "grid", "parameters": {"train.lr": {"min": 0.001, "max": 0.01}}}, "train.lr is continuous"),
        (
            {"method": "grid", "parameters": {"lora.r": {"distribution": "int_uniform", "min": 1.5, "max": 4}}},
            "int_uniform needs integer",
        ),
        (
            {
                "method": "grid",
                "parameters": {"lora.r": {"values": [4]}},
                "early_terminate": {"type": "hyperband", "eta": 3},
            },
            "hyperband needs min_iter",
        ),
        (
            {"method": "grid", "parameters": {"lora.r": {"values": [4, 8], "probabilities": [0.5]}}},
            "probabilities has 1 entries, values 2",
        ),
    ],
)
def test_sweep_schema_rejects(sweep, message):
    with pytest.raises(SweepError, match=message):
        parse_sweep(sweep)


@pytest.mark.parametrize("parameters", [
    {"train.max_steps": {"distribution": "int_uniform", "min": 1, "max": 10**10}},
    {"lora.dropout": {"distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": 1e-10}},
    {f"train.{k}": {"values": list(range(1, 11))} for k in ("max_steps", "warmup_steps", "seed", "log_every",
                                                           "save_every", "eval_every")},  # 10**6 points
])
def test_a_grid_too_large_to_run_is_one_line_at_once(tmp_path, parameters):
    proc = cli("sweep", "plan", write(tmp_path, {"method": "grid", "run_cap": 5, "parameters": parameters}))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "points (" in proc.stderr and "at most 10,000: narrow the ranges" in proc.stderr


def test_constraints_that_would_never_finish_simply_do_not_hold():
    from spelltune.sweeps.constraints import Constraint, safe_holds

    # Unbounded, the first two would run for hours or fill the memory.
    for expr in ("lora.r ** 10 ** 10 > 0", "'x' * 10 ** 12 == 'x'", "lora.r * 'x' != ''"):
        assert safe_holds(Constraint(expr), {"lora.r": 8}) is False
    assert safe_holds(Constraint("lora.r ** 2 >= 64"), {"lora.r": 8}) is True


def test_search_space_outside_the_params_schema_fails_before_anything_runs(tmp_path):
    path = write(tmp_path, {"method": "random", "run_cap": 3,
                            "parameters": {"lora.r": {"min": 0, "max": 8}, "train.lr": {"values": [0.1, 2.0]}}})
    proc = cli("sweep", "run", path)
    assert proc.returncode == 2
    assert (
        "parameters.lora.r: value 0 is not allowed by the params schema: Input should be greater than 0" in proc.stderr
    )
    assert (
        "parameters.train.lr: value 2.0 is not allowed by the params schema: Input should be less than 1" in proc.stderr
    )


def test_grid_honours_constraints_schema_and_run_cap(tmp_path):
    sweep = {
        "method": "grid",
        "parameters": {
            "lora.r": {"values": [4, 8, 16, 32]},
            "lora.alpha": {"values": [8, 16]},
            "train.warmup_steps": {"values": [10, 500]},  # 500 > train.max_steps: the schema says no
        },
        "constraints": ["lora.alpha >= lora.r"],
    }
    proc = cli("sweep", "plan", write(tmp_path, sweep))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    configs = [line.split()[1:] for line in lines if line.startswith("  s-")]
    assert configs == [
        ["lora.r=4", "lora.alpha=8", "train.warmup_steps=10"],
        ["lora.r=4", "lora.alpha=16", "train.warmup_steps=10"],
        ["lora.r=8", "lora.alpha=8", "train.warmup_steps=10"],
        ["lora.r=8", "lora.alpha=16", "train.warmup_steps=10"],
        ["lora.r=16", "lora.alpha=16", "train.warmup_steps=10"],
    ]
    assert lines[-1] == "trials: 5"
    assert any("violates constraint lora.alpha >= lora.r" in line for line in lines)
    assert any("train.warmup_steps = 500: must be <= train.max_steps" in line for line in lines)

    capped = cli("sweep", "plan", write(tmp_path, {**sweep, "run_cap": 2})).stdout.splitlines()
    assert capped[-1] == "trials: 2"


def test_distributions_grid_and_random_draws():
    sweep = parse_sweep({
        "method": "random", "run_cap": 40, "seed": 3,
        "parameters": {
            "train.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
            "lora.dropout": {"distribution": "q_uniform", "min": 0.0, "max": 0.2, "q": 0.05},
            "train.warmup_steps": {"min": 0, "max": 5},  # int_uniform, inferred
            "train.weight_decay": {"min": 0.0, "max": 0.1},  # uniform, inferred
            "lora.target_modules": {"values": [["q_proj", "v_proj"], ["q_proj"]], "probabilities": [0.9, 0.1]},
            "train.seed": {"value": 1},
        },
    })
    space = Space(sweep, BASE)
    assert sweep.parameters["lora.dropout"].grid() == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert sweep.parameters["train.warmup_steps"].grid() == [0, 1, 2, 3, 4, 5]
    configs, rejected = space.random()
    assert len(configs) == 40 and rejected == 0
    assert configs == Space(sweep, BASE).random()[0]  # seeded: the same draws every time
    for c in configs:
        assert 1e-4 <= c["train.lr"] <= 1e-2 and c["lora.dropout"] in (0.0, 0.05, 0.1, 0.15, 0.2)
        assert isinstance(c["train.warmup_steps"], int) and 0 <= c["train.weight_decay"] <= 0.1
        assert c["train.seed"] == 1
    lrs = sorted(c["train.lr"] for c in configs)
    assert lrs[len(lrs) // 2] < 3e-3  # log-uniform: the median is near the geometric mean (1e-3)
    assert sum(c["lora.target_modules"] == ["q_proj"] for c in configs) < 15


def test_random_finite_space_smaller_than_run_cap(tmp_path):
    proc = cli("sweep", "plan", write(tmp_path, {"method": "random", "run_cap": 10,
                                                  "parameters": {"lora.r": {"values": [4, 8]}}}))
    assert proc.stdout.splitlines()[-1] == "trials: 2"
    assert "only 2 distinct configurations" in proc.stdout


def test_constraints():
    c = Constraint("lora.alpha >= 2 * lora.r and not train.lr > 0.01")
    assert c.keys == {"lora.alpha", "lora.r", "train.lr"}
    assert c.holds({"lora.alpha": 32, "lora.r": 16, "train.lr": 0.001})
    assert not c.holds({"lora.alpha": 16, "lora.r": 16, "train.lr": 0.001})
    assert not c.holds({"lora.alpha": 64, "lora.r": 16, "train.lr": 0.1})
    assert Constraint("0 < train.warmup_steps < train.max_steps").holds(
        {"train.warmup_steps": 5, "train.max_steps": 10}
    )
    for bad in ("lora.r", "open('x')", "lora.r >= [1]", "lora.r = 3"):
        with pytest.raises(ValueError):
            Constraint(bad)


def test_a_constraint_may_name_a_key_the_sweep_does_not_set():
    sweep = parse_sweep({"method": "grid", "parameters": {"train.warmup_steps": {"values": [5, 200, 300]}},
                         "constraints": ["train.warmup_steps * 2 <= train.max_steps"]})
    configs, dropped = Space(sweep, BASE).grid()
    assert [c["train.warmup_steps"] for c in configs] == [5]  # params.yaml: max_steps 250
    assert len(dropped) == 2


@pytest.mark.parametrize("value, text", [
    (1e-4, "0.0001"), (2e-05, "2e-05"), (16, "16"), (True, "true"), (None, "null"),
    ("cosine", "cosine"), ("/tmp/tiny model", "'/tmp/tiny model'"), (["q_proj", "v_proj"], "[q_proj,v_proj]"),
    ("true", "'true'"),
])
def test_override_values_as_dvc_reads_them(value, text):
    assert format_value(value) == text


def test_cli_overrides_are_checked():
    assert parse_override("train.lr=1e-3") == ("train.lr", 1e-3)
    assert parse_override("lora.target_modules=[q_proj, v_proj]") == ("lora.target_modules", ["q_proj", "v_proj"])
    with pytest.raises(SweepError, match="unknown params key"):
        parse_override("train.lrr=1")


def test_workers_share_the_cores():
    import os

    sweep = parse_sweep({"method": "grid", "parameters": {"lora.r": {"values": [4]}}})
    cores = len(os.sched_getaffinity(0))
    zero = {**BASE, "train": {**BASE["train"], "threads": 0}}
    assert thread_override(sweep, Space(sweep, zero), 2) == {"train.threads": max(1, cores // 2)}
    assert thread_override(sweep, Space(sweep, zero), 1) == {}  # one worker: all cores, as params say
    assert thread_override(sweep, Space(sweep, zero, {"train.threads": 3}), 2) == {}  # the user's choice
    three = {**BASE, "train": {**BASE["train"], "threads": 3}}
    assert thread_override(sweep, Space(sweep, three), 2) == {}


def test_wandb_agent_arguments_become_dvc_overrides(tmp_path):
    assert wandb_overrides(["--train.lr=0.0003", "--lora.r", "8", "--lora.target_modules=['q_proj', 'v_proj']"]) == {
        "train.lr": 0.0003, "lora.r": 8, "lora.target_modules": ["q_proj", "v_proj"]}
    with pytest.raises(SweepError):
        wandb_overrides(["--train.nope=1"])
    proc = cli("sweep", "wandb-agent", "sweep.yaml", "--dry-run", "--threads", "1",
               "--train.lr=0.0003", "--lora.r=8", "--lora.alpha=16", "--train.warmup_steps=5", "--lora.dropout=0.05")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "dvc exp run --temp -n spell-wandb-"
        + proc.stdout.split("spell-wandb-")[1].split()[0]
        + " -S train.threads=1 -S train.lr=0.0003 -S lora.r=8 -S lora.alpha=16 -S train.warmup_steps=5"
        + " -S lora.dropout=0.05"
    )
    # W&B knows nothing of our constraints: such a run is skipped, not run.
    skipped = cli("sweep", "wandb-agent", "sweep.yaml", "--dry-run", "--lora.r=32", "--lora.alpha=8")
    assert skipped.returncode == 0 and skipped.stdout == ""
    assert "violates constraint lora.alpha >= lora.r" in skipped.stderr


def test_sweep_yaml_command_runs_the_agent_entry_point():
    sweep = yaml.safe_load((ROOT / "sweep.yaml").read_text())
    assert sweep["command"][2:6] == ["-m", "spelltune.cli", "sweep", "wandb-agent"]
    assert sweep["command"][-1] == "${args}"


# ---------------------------------------------------------------- trial reporter (real Optuna study)


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


# ---------------------------------------------------------------- bayes failures (real DVC, a stand-in stage)

FAKE_STAGE = '''
import json, os, pathlib, sys, yaml
p = yaml.safe_load(open("params.yaml"))
r, lr = p["lora"]["r"], p["train"]["lr"]
marker = pathlib.Path(os.environ["FAKE_MARKERS"]) / f"{lr!r}"
if r == 8 or not marker.exists():  # r = 8 always fails; anything else fails its first attempt
    marker.touch()
    sys.exit(3)
pathlib.Path("metrics").mkdir(exist_ok=True)
json.dump({"val/loss": lr}, open("metrics/eval.json", "w"))
'''


def test_bayes_failed_trial_is_retried_once_and_never_stops_the_others(tmp_path):
    """A stand-in one-stage pipeline (so this runs in seconds): each config fails at its
    first attempt and passes at its retry; with lora.r=8 every attempt fails."""
    import optuna
    from optuna.trial import TrialState as TS

    from conftest import run
    from spelltune.training.pruning import open_storage

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (repo / "fake.py").write_text(FAKE_STAGE)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"fake": {
        "cmd": "python fake.py", "deps": ["fake.py"], "params": ["lora.r", "train.lr"],
        "metrics": [{"metrics/eval.json": {"cache": False}}]}}}))
    write(repo, {"name": "f", "method": "bayes", "metric": {"name": "val/loss", "goal": "minimize"},
                 "parameters": {"train.lr": {"min": 0.1, "max": 0.2}}, "run_cap": 2})
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.name", "t"],
                ["git", "config", "user.email", "t@t.invalid"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "init"]):
        run(cmd, repo)
    markers = tmp_path / "markers"
    markers.mkdir()
    sweep = [sys.executable, "-m", "spelltune.cli", "sweep", "run", "s.yaml"]

    ok = run(sweep, repo, env={"FAKE_MARKERS": str(markers)}, timeout=300)
    trials = optuna.load_study(study_name="f", storage=open_storage(str(repo / ".spelltune/sweeps/f.journal"))).trials
    # Retried through Optuna's RetryHeartbeatStaleTrialCallback: it marks the copy's system attrs.
    first = [t for t in trials if "failed_trial" not in t.system_attrs]
    retries = [t for t in trials if "failed_trial" in t.system_attrs]
    assert [t.state for t in first] == [TS.FAIL, TS.FAIL] and len(retries) == 2
    assert all(t.state == TS.COMPLETE for t in retries)
    for t in retries:
        assert t.params == trials[t.system_attrs["failed_trial"]].params
        assert t.value == pytest.approx(t.params["train.lr"], rel=1e-5)
    assert ok.stdout.strip().splitlines()[-1] == "trials: 2  complete: 2  pruned: 0  failed: 2"

    bad = run([*sweep, "-S", "lora.r=8", "--storage", str(tmp_path / "bad.journal")], repo, check=False,
              env={"FAKE_MARKERS": str(markers)}, timeout=300)
    assert bad.returncode == 1
    assert bad.stdout.strip().splitlines()[-1] == "trials: 2  complete: 0  pruned: 0  failed: 4"
    assert bad.stderr.count("will be retried once") == 2
    assert "see .spelltune/sweeps/f/f-t000.log" in bad.stderr
    assert "(f-t001-2)" in bad.stderr  # a name the first study's experiment holds is not reused


# ---------------------------------------------------------------- W&B: the same file, the same meaning

# W&B's sweep config schema (wandb/sweeps, config/schema.json), recorded: the top level and
# early_terminate allow only these keys ("additionalProperties": false), and each parameter
# one of these shapes. `wandb sweep` sends the file to W&B's server, which checks it there.
WANDB_TOP = {"apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
             "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters"}
WANDB_HYPERBAND = {"type", "max_iter", "min_iter", "s", "eta", "strict"}
WANDB_PARAM_SHAPES = {
    "constant": {"value", "distribution"}, "categorical": {"values", "distribution"},
    "int_uniform": {"min", "max", "distribution"}, "uniform": {"min", "max", "distribution"},
    "q_uniform": {"min", "max", "q", "distribution"}, "log_uniform_values": {"min", "max", "distribution"},
}


def test_sweep_yaml_is_a_valid_wandb_sweep_config():
    from spelltune.sweeps.wandb_compat import wandb_problems

    raw = yaml.safe_load((ROOT / "sweep.yaml").read_text())
    assert set(raw) <= WANDB_TOP, set(raw) - WANDB_TOP
    assert raw["project"] and raw["method"] in ("grid", "random", "bayes")
    assert raw["early_terminate"]["type"] == "hyperband" and set(raw["early_terminate"]) <= WANDB_HYPERBAND
    assert set(raw["metric"]) <= {"name", "goal", "target"} and ":" not in raw["metric"]["name"]
    assert raw["metric"]["name"].startswith("val/")  # chosen on validation, a key W&B's runs have
    sweep = parse_sweep(raw)
    for key, spec in raw["parameters"].items():
        assert set(spec) <= WANDB_PARAM_SHAPES[sweep.parameters[key].distribution], key
    assert wandb_problems(ROOT / "sweep.yaml") == []
    proc = cli("sweep", "plan", "sweep.yaml")
    assert "note:" not in proc.stderr and "warning" not in proc.stderr, proc.stderr
    assert "constraint: lora.alpha >= lora.r" in proc.stdout  # from sweep.spelltune.yaml, beside it


def test_our_extensions_live_beside_the_wandb_file(tmp_path):
    base = {"name": "x", "method": "random", "run_cap": 2, "metric": {"name": "val/loss"},
            "parameters": {"lora.r": {"values": [4, 8]}, "lora.alpha": {"values": [4, 16]}}}
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({**base, "constraints": ["lora.alpha >= lora.r"], "seed": 3}))
    plan = cli("sweep", "plan", str(path))  # inline still works for us, with a note for W&B
    assert plan.returncode == 0
    assert "constraints: W&B rejects this top-level key" in plan.stderr and "move it to x.spelltune.yaml" in plan.stderr
    assert "seed: W&B rejects" in plan.stderr and "project: not set" in plan.stderr

    path.write_text(yaml.safe_dump({**base, "project": "p"}))
    (tmp_path / "x.spelltune.yaml").write_text(yaml.safe_dump(
        {"constraints": ["lora.alpha >= lora.r"], "seed": 3, "early_terminate": {"type": "median", "min_iter": 1}}))
    plan = cli("sweep", "plan", str(path))
    assert plan.returncode == 0 and "note:" not in plan.stderr, plan.stderr
    assert "constraint: lora.alpha >= lora.r" in plan.stdout and "trials: 2" in plan.stdout

    (tmp_path / "x.spelltune.yaml").write_text(yaml.safe_dump({"seed": 1, "parameters": {}}))
    path.write_text(yaml.safe_dump({**base, "project": "p", "seed": 2}))
    bad = cli("sweep", "plan", str(path))
    assert bad.returncode == 2
    assert "x.spelltune.yaml: parameters: unknown key; allowed: constraints, seed, early_terminate" in bad.stderr
    assert "x.spelltune.yaml: seed: also set in" in bad.stderr


@pytest.mark.parametrize("early_terminate, metric, fixed, message", [
    ({"type": "hyperband", "min_iter": 50, "eta": 2}, "val/letter_position_accuracy", [],
     "early_terminate.min_iter = 50: counts validation evaluations (as W&B counts the metric's logs); a run has "
     f"{BASE['train']['max_steps'] // BASE['train']['eval_every']} "),
    ({"type": "hyperband", "min_iter": 1, "eta": 2}, "val/char_error_rate", [],
     "early_terminate needs a metric the train stage logs at each evaluation"),
    ({"type": "hyperband", "min_iter": 1, "eta": 2}, "val/spelling_exact_match", ["-S", "train.val_generate_items=0"],
     "logged during training only when train.val_generate_items > 0"),
])
def test_early_terminate_counts_evaluations_and_needs_a_training_metric(
    tmp_path, early_terminate, metric, fixed, message
):
    path = write(tmp_path, {"method": "bayes", "run_cap": 4, "metric": {"name": metric, "goal": "maximize"},
                            "parameters": {"train.lr": {"min": 1e-4, "max": 1e-3}}, "early_terminate": early_terminate})
    proc = cli("sweep", "plan", path, *fixed)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_min_iter_in_evaluations_becomes_optuna_steps():
    from spelltune.sweeps.study import pruner_spec

    sweep = parse_sweep({"method": "bayes", "run_cap": 4, "metric": {"name": "val/loss"},
                         "parameters": {"train.lr": {"min": 1e-4, "max": 1e-3}},
                         "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2}})
    spec = pruner_spec(sweep, Space(sweep, BASE, {"train.eval_every": 20, "train.max_steps": 130}))
    # W&B stops a run after its 1st logged evaluation; Optuna's rung is that evaluation's step.
    assert spec == {
        "type": "hyperband",
        "min_resource": 20,
        "max_resource": 120,
        "reduction_factor": 2,
        "eval_every": 20,
    }

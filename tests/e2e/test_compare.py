"""Comparing experiments: one real repository with a committed baseline run, one workspace
experiment and two queued ones (one differs from the baseline only in train.seed;
conftest.build_experiments_repo), then what a user runs: `spelltune compare`, `significance`,
`recommend`, `errors`; and `dvc exp show` at 120 columns. (The paired test and the error
analysis on constructed cases: experiments/test_significance.py, experiments/test_error_analysis.py.)"""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, build_experiments_repo, git_commit_all, run, set_args

pytestmark = pytest.mark.e2e

# The tiny model answers nothing right, so every accuracy ties at 0; the validation loss
# differs between these configs, so ranking tests use it.
LOSS = "metrics/train.json:val/loss"


@pytest.fixture(scope="session")
def exp_repo(tmp_path_factory, tiny_model) -> Path:
    return build_experiments_repo(tmp_path_factory.getbasetemp() / "experiments_repo", tiny_model)


@pytest.fixture(scope="module")
def runs(exp_repo):
    from spelltune.experiments.runs import load_runs

    return load_runs(exp_repo)


def spelltune(repo: Path, *args, check: bool = True):
    """The `spelltune` command as a user runs it (a subprocess in the repository)."""
    return run(["spelltune", *args], repo, check=check, timeout=300)


def cli(repo: Path, *args) -> tuple[int, str, str]:
    """The same command in this process (no interpreter start-up): exit code, stdout, stderr."""
    import contextlib
    import io

    from spelltune.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*args, "--repo", str(repo)])
        except SystemExit as exc:  # argparse rejects a value
            code = exc.code
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------- compare


def test_compare_ranks_every_finished_experiment(exp_repo, tmp_path):
    out = tmp_path / "compare"
    proc = spelltune(exp_repo, "compare", "--metric", "val/loss", "--out", str(out))
    with open(out / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    # The baseline commit, the workspace experiment and both queued runs; the workspace is
    # the `lr` experiment again, so it is not listed twice.
    assert {r["experiment"] for r in rows} == {"main", "lr", "rank", "seed"}
    losses = [float(r["train:val/loss"]) for r in rows]
    assert losses == sorted(losses), "a loss ranks lowest first"
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    # Only the params that vary, none of the shared ones.
    params = [c for c in rows[0] if re.fullmatch(r"(data|model|lora|train|eval)\.[a-z_.]+", c)]
    assert sorted(params) == ["lora.r", "train.lr", "train.seed"]
    by_name = {r["experiment"]: r for r in rows}
    assert (
        float(by_name["lr"]["train.lr"]) == 0.005
        and by_name["rank"]["lora.r"] == "4"
        and by_name["seed"]["train.seed"] == "1"
    )
    # Markdown and the printed table agree with the CSV's order.
    md = (out / "leaderboard.md").read_text()
    assert [line.split("|")[2].strip() for line in md.splitlines() if re.match(r"\|\s+\d+ \|", line)] == [
        r["experiment"] for r in rows
    ]
    assert rows[0]["experiment"] in proc.stdout
    # One self-contained page: every image inlined, nothing fetched.
    page = (out / "compare.html").read_text()
    assert re.findall(r'src="([^"]+)"', page) and all(
        src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]+)"', page)
    )
    for section in ("Metric against each varying parameter", "Parallel coordinates", "Learning curves",
                    "Significance", "different seeds", "Parameter importance", "Next configs to try"):
        assert section in page


def test_experiments_of_other_eval_sets_or_base_models_are_never_ranked_together(exp_repo, runs, tmp_path, other_tiny):
    """A copy of the repository gains an experiment on another base model with more held-out
    words: every cross-experiment command refuses the mix in one line naming both groups, and
    --where / --exp pick one."""
    repo = tmp_path / "mixed"
    shutil.copytree(exp_repo, repo, symlinks=True)
    run(["dvc", "exp", "run", "-n", "other", *set_args({"model.source": str(other_tiny),
                                                        "data.validation_words": 5})], repo, timeout=900)
    (ours,) = set(runs.table["eval_set"])  # the fixture's four share one eval set
    assert ours != "unknown"
    for command in (["compare", "--out", str(tmp_path / "c")], ["recommend"], ["significance"], ["errors"]):
        code, _, err = cli(repo, *command)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "2 different eval sets or base models" in err and f"eval_set={ours} (4: " in err
        assert all(name in err for name in ("other", "main")) and "--where eval_set=" in err
    code, _, _ = cli(repo, "compare", "--metric", "val/loss", "--where", f"eval_set={ours}",
                     "--out", str(tmp_path / "ours"))
    with open(tmp_path / "ours" / "leaderboard.csv") as f:
        assert code == 0 and {r["experiment"] for r in csv.DictReader(f)} == {"main", "lr", "rank", "seed"}
    code, out, _ = cli(repo, "recommend", "--exp", "other", "--exp", "main", "--where", f"model.source={other_tiny}")
    assert code == 0 and "other" in out
    code, _, err = cli(repo, "compare", "--where", "train.lr")
    assert code == 2 and "--where 'train.lr': give KEY=VALUE" in err


def test_recommend_never_proposes_bookkeeping_params(exp_repo):
    _, out, _ = cli(exp_repo, "recommend", "--metric", "val/loss")
    for key in ("save_every", "keep_last", "early_stop", "log_every", "eval_every", "grad_norm_limit", "threads"):
        assert key not in out


def test_default_metric_and_order(exp_repo, runs, tmp_path):
    from spelltune.experiments.leaderboard import leaderboard

    assert cli(exp_repo, "compare", "--out", str(tmp_path))[0] == 0
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    # Validation chooses; the test split's numbers are shown as the final check only.
    assert list(board.columns[:4]) == ["rank", "experiment", "rev", "val/spelling_exact_match"]
    assert board["val/spelling_exact_match"].is_monotonic_decreasing  # an accuracy ranks highest first
    assert "test/spelling_exact_match (final check)" in board.columns
    assert leaderboard(runs, "val/loss", ascending=False)["train:val/loss"].is_monotonic_decreasing


def test_choosing_on_the_test_split_needs_an_explicit_metric_and_warns_once(exp_repo, tmp_path):
    rc, _, err = cli(exp_repo, "recommend")
    assert rc == 0 and "warning" not in err
    rc, out, err = cli(exp_repo, "recommend", "--metric", "test/spelling_exact_match")
    assert rc == 0 and out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "test/spelling_exact_match" in warnings[0] and "val/" in warnings[0]


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["compare", "--metric", "test/accuracy"],
            "unknown metric 'test/accuracy'; allowed: val/letter_position_accuracy",
        ),
        (["significance", "no-such-exp"], "unknown experiment 'no-such-exp'; known: "),
        (["errors", "no-such-exp"], "unknown experiment 'no-such-exp'; known: "),
        (
            ["significance", "--metric", "val/loss"],
            "significance needs an accuracy metric, got 'val/loss'; allowed: val/letter_position_accuracy",
        ),
        (["errors", "--split", "train"], "invalid choice: 'train'"),
    ],
)
def test_bad_input_is_one_clear_line(exp_repo, args, needle):
    code, _, err = cli(exp_repo, *args)
    assert code != 0
    assert needle in err
    if "--split" not in args:  # (argparse adds its usage line)
        assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- dvc exp show

TABLE = ["dvc", "exp", "show", "--no-pager", "--only-changed"]
HEADLINE_COLUMNS = ["val.letter", "val.spell", "vocab.spell", "common.spell"]


def table_at_120_columns(repo: Path) -> tuple[str, str, list[str]]:
    """`COLUMNS=120 dvc exp show --no-pager --only-changed`: the whole text, its header line and its rows."""
    text = run(TABLE, repo, env={"COLUMNS": "120"}).stdout
    lines = [line for line in text.splitlines() if line.strip() and not set(line.strip()) <= {"─"}]
    assert all(len(line) <= 120 for line in lines), text
    return text, lines[0], lines[1:]


def folded_only_after(header: str, column: str, rows: list[str]) -> None:
    """Every `…` (a column DVC folded, or a cut cell) lies right of `column`."""
    end = header.index(column) + len(column)
    for row in rows:
        assert "…" not in row[:end], f"{column}: a folded column or cut cell before it:\n{header}\n{row}"


def test_exp_show_of_the_real_pipeline_folds_every_changing_dependency(exp_repo):
    """The tiny model scores 0 everywhere, so no metric changes; the params that do are shown
    whole and the changing dependencies (checkpoints, the report's inputs) fold into one `…`
    instead of a 32-character hash column (validate's marker sorts first and never changes)."""
    text, header, rows = table_at_120_columns(exp_repo)
    columns = header.split()
    assert {"lora.r", "train.lr", "train.seed"} <= set(columns) and columns[-1] == "…", text
    assert not re.search(r"\b[0-9a-f]{32}\b", text), text
    folded_only_after(header, "train.seed", rows)


def test_a_grid_table_fits_120_columns(tmp_path):
    """A lora.r x train.lr grid of four experiments: both params and every headline metric whole
    at 120 columns, with numbers that differ per run. The numbers are the report stage's own
    (run_report.headline on made-up scores); the repository has this project's .dvcignore and
    .gitignore and the real dvc.yaml's shape: validate's marker, a changing checkpoints/ output."""
    repo = tmp_path / "grid"
    repo.mkdir()
    for name in (".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "params.yaml").write_text("data:\n  seed: 0\nlora:\n  r: 16\ntrain:\n  lr: 0.003\n")
    (repo / "score.py").write_text(
        "import random, sys, yaml\n"
        "from spelltune.files import write_json\n"
        "from spelltune.paths import HEADLINE_FILE, PARAMS_OK\n"
        "from spelltune.training.run_report import HEADLINE_KEYS, headline\n"
        "p = yaml.safe_load(open('params.yaml'))\n"
        "rng = random.Random(f\"{p['lora']['r']}-{p['train']['lr']}\")\n"
        "def split(value): return {k: {'value': value()} for k in HEADLINE_KEYS}\n"
        "def held_out(v): return {s: {**split(v), 'groups': {'common': split(v)}} for s in ('val', 'test')}\n"
        "def scores(value): return {**held_out(value), 'vocabulary': {'groups': {'top1k': split(value)}}}\n"
        "if sys.argv[1] == 'validate':\n"
        "    PARAMS_OK.parent.mkdir(exist_ok=True); PARAMS_OK.write_text('ok')\n"
        "elif sys.argv[1] == 'train':\n"
        "    open('checkpoints/adapter.txt', 'w').write(str(rng.random()))\n"
        "else:\n"
        "    HEADLINE_FILE.parent.mkdir(exist_ok=True)\n"
        "    write_json(headline({'eval': scores(rng.random), 'base': scores(lambda: 0.1625)}), HEADLINE_FILE)\n"
    )
    stages = {
        "validate": {"cmd": "python score.py validate", "always_changed": True,
                     "outs": [{".spelltune/params.ok": {"cache": False}}]},
        "train": {"cmd": "mkdir -p checkpoints && python score.py train", "params": ["lora", "train"],
                  "deps": [".spelltune/params.ok", "score.py"], "outs": ["checkpoints"]},
        "report": {"cmd": "python score.py report", "deps": [".spelltune/params.ok", "checkpoints"],
                   "metrics": [{"metrics/headline.json": {"cache": False}}]},
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    git_commit_all(repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "exp", "run"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    for r in (8, 32):
        for lr in (0.002, 0.004):
            run(["dvc", "exp", "run", "-S", f"lora.r={r}", "-S", f"train.lr={lr}"], repo)

    text, header, rows = table_at_120_columns(repo)
    assert header.split()[2:] == [*HEADLINE_COLUMNS, "lora.r", "train.lr", "…"], text
    assert len(rows) == 6  # workspace, main and the four experiments
    folded_only_after(header, "train.lr", rows)
    numbers = r"\s+".join([r"0\.\d+"] * len(HEADLINE_COLUMNS) + [r"(8|16|32)", r"0\.00\d"])
    assert all(re.search(numbers, row) for row in rows), "\n".join(rows)


# ---------------------------------------------------------------------------- significance


def test_significance_command(exp_repo):
    default = spelltune(exp_repo, "significance").stdout  # as the user runs it
    lines = default.splitlines()
    # best vs runner-up, best vs base model, then the seed group
    assert " vs " in lines[0] and "vs base model" in lines[1]
    for line in lines[:2]:
        assert "McNemar exact p=" in line and "95% CI" in line
        assert line.endswith(("the difference could be noise.", "the difference is real at p<0.05.",
                              "identical on this metric, nothing to test."))
    assert "Same config, different seeds (mean ± 95% CI" in default
    _, explicit, _ = cli(exp_repo, "significance", "rank", "lr", "--metric", "test/spelling_exact_match")
    assert explicit.startswith("rank vs lr on test/spelling_exact_match:")


def test_seed_only_variants_are_aggregated(runs):
    from scipy import stats

    from spelltune.experiments.significance import seed_groups
    metric = runs.resolve_metric("val/loss")
    groups = seed_groups(runs, metric)
    assert len(groups) == 1
    group = groups.iloc[0]
    assert group["n"] == 2 and set(group["experiments"].split(", ")) == {"main", "seed"}
    values = runs.table.loc[["main", "seed"], metric].astype(float)
    assert group["mean train:val/loss"] == pytest.approx(values.mean())
    assert group["± (95% CI)"] == pytest.approx(stats.t.ppf(0.975, 1) * values.std() / 2 ** 0.5)


# ---------------------------------------------------------------------------- importance


def test_importance_over_finished_experiments(runs):
    from spelltune.experiments.runs import Runs
    from spelltune.experiments.significance import importance

    result = importance(runs, LOSS)
    assert set(result.index) == {"train.lr", "lora.r"}  # the seed is not a hyperparameter
    assert result["variance explained"].between(0, 1).all()
    few = Runs(runs.repo, runs.table.loc[["main", "lr"]], runs.params, runs.metrics)
    message = importance(few, LOSS)
    assert isinstance(message, str) and message.startswith("Parameter importance needs at least 4 finished experiments")
    flat = importance(runs, "metrics/eval.json:test/letter_position_accuracy")  # 0 everywhere with the tiny model
    assert isinstance(flat, str) and "is the same in every experiment" in flat


# ---------------------------------------------------------------------------- recommendations


def apply_set_args(params: dict, line: str) -> dict:
    words = shlex.split(line.split("#")[0])
    assert words[:4] == ["dvc", "exp", "run", "--queue"]
    assert words[4::2] == ["-S"] * len(words[4::2])
    for assignment in words[5::2]:
        key, value = assignment.split("=", 1)
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        assert leaf in node, key
        node[leaf] = yaml.safe_load(value)
    return params


def cli_check(path: Path) -> int:
    from spelltune.cli import main

    return main(["check", str(path)])


def test_recommendations_are_valid_new_configs(exp_repo, runs, tmp_path):
    _, out, _ = cli(exp_repo, "recommend", "--metric", "val/loss")
    lines = out.splitlines()
    commands = [line for line in lines if not line.startswith("#")]
    assert len(commands) >= 3
    base = yaml.safe_load((exp_repo / "params.yaml").read_text())
    tried = {(r["train.lr"], r["lora.r"], r["train.seed"]) for _, r in runs.table.iterrows()}
    for line in commands:
        params = apply_set_args(json.loads(json.dumps(base)), line)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        assert cli_check(path) == 0, line
        assert (params["train"]["lr"], params["lora"]["r"], params["train"]["seed"]) not in tried, line
    # A neighbour of the best learning rate on a log scale is among them.
    best_lr = runs.table.sort_values(LOSS).iloc[0]["train.lr"]
    lrs = {apply_set_args(json.loads(json.dumps(base)), c)["train"]["lr"] for c in commands}
    assert (
        best_lr * 2 in lrs
        or best_lr / 2 in lrs
        or any(min(runs.table["train.lr"]) < lr < max(runs.table["train.lr"]) for lr in lrs)
    )


# ---------------------------------------------------------------------------- errors


def test_errors_command(exp_repo, tmp_path):
    out = tmp_path / "errors.md"
    assert cli(exp_repo, "errors", "rank", "--split", "all", "--out", str(out))[0] == 0
    text = out.read_text()
    assert text.startswith("# Errors of rank (all split)")
    for title in ("By word length", "Letter questions by position asked", "Letter questions by expected letter",
                  "Most common confusions", "Worst words"):
        assert f"## {title}" in text
    assert "What is the" in text  # examples



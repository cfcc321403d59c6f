"""End to end: a fresh git + DVC repository, a real `dvc exp run` of all stages on the
tiny model, then what a user looks at: metrics files, `dvc exp show`, plots."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import TINY_OVERRIDES, run, set_args
from spelltune.metric_names import VOCABULARY_GROUPS
from spelltune.params import flatten
from spelltune.task.questions import ITEMS_PER_HELD_OUT_WORD

pytestmark = pytest.mark.e2e

TASK_METRICS = ("letter_position_accuracy", "spelling_exact_match", "char_error_rate")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outputs(repo: Path) -> dict[str, str]:
    """Every file the pipeline wrote, with its content hash."""
    files = [p for d in ("data", "checkpoints", "metrics", "plots") for p in (repo / d).rglob("*") if p.is_file()]
    return {str(p.relative_to(repo)): digest(p) for p in files}


def exp_run(repo: Path, overrides: dict, check: bool = True):
    return run(["dvc", "exp", "run", *set_args(overrides)], repo, check=check, timeout=900)


def test_exp_run_end_to_end(repo, tiny_model):
    overrides = {"model.source": str(tiny_model), **TINY_OVERRIDES}
    exp_run(repo, overrides)

    # prepare: the data and the base model as safetensors
    for split in ("train", "validation", "test"):
        assert (repo / "data" / f"{split}.jsonl").stat().st_size > 0
    assert (repo / "data" / "base_model" / "model.safetensors").exists()
    # train: the adapter and DVCLive curves with the optimizer step as the step
    assert (repo / "checkpoints" / "adapter" / "adapter_model.safetensors").exists()
    loss = (repo / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert loss[0].split("\t") == ["timestamp", "step", "loss"]
    assert [int(r.split("\t")[1]) for r in loss[1:]] == [2, 4, 6]
    curves = repo / "metrics/train/plots/metrics"
    logged = {str(p.relative_to(curves))[: -len(".tsv")] for p in curves.rglob("*.tsv")}
    assert {
        "train/loss", "train/perplexity", "train/learning_rate", "train/grad_norm",
        "time/wallclock_hours", "time/gradient_steps", "time/tokens_seen", "progress/completion_pct",
        "throughput/tokens_per_second", "throughput/steps_per_hour", "memory/rss_mb",
        "val/loss", "val/perplexity", "val/eval_time_seconds", "val/train_val_gap",
        "val/letter_position_accuracy", "val/spelling_exact_match",
    } <= logged
    val_steps = [int(r.split("\t")[1]) for r in (curves / "val/loss.tsv").read_text().splitlines()[1:]]
    assert val_steps == [3, 6]
    completion = (curves / "progress/completion_pct.tsv").read_text().splitlines()[-1].split("\t")
    assert float(completion[-1]) == 100.0
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert summary["best_step"] in (3, 6) and summary["early_stop_reason"] == "max_steps"
    assert summary["final"]["time/gradient_steps"] == TINY_OVERRIDES["train.max_steps"]
    assert summary["best"]["val/loss"] == min(
        float(r.split("\t")[2]) for r in (curves / "val/loss.tsv").read_text().splitlines()[1:]
    )
    assert 0 < summary["parameters"]["trainable"] < summary["parameters"]["total"]
    assert len(summary["params_fingerprint"]) == 16 and summary["tokens_seen"] > 0
    # evaluate: base and fine-tuned, every item of val and test, the three metrics, each
    # with its n and 95 % interval beside the headline numbers
    items = {"val": ITEMS_PER_HELD_OUT_WORD * TINY_OVERRIDES["data.validation_words"],
             "test": ITEMS_PER_HELD_OUT_WORD * TINY_OVERRIDES["data.test_words"]}
    subsets = ["common", "mid", "rare", "canonical", "held_out", "common_canonical", "common_held_out"]
    for name in ("base", "eval"):
        metrics = json.loads((repo / "metrics" / f"{name}.json").read_text())
        metrics = metrics["base"] if name == "base" else metrics  # nested: compare names them base.val/...
        held_out = {f"{split}/{group}{m}" for split in ("val", "test") for m in TASK_METRICS
                    for group in ["", *(f"{g}/" for g in subsets)]}
        assert set(metrics) - held_out == ({f"vocabulary/{g}/{m}" for g in VOCABULARY_GROUPS for m in TASK_METRICS
                                            if f"vocabulary/{g}/{m}" in metrics} if name == "eval" else set())
        # the fine-tuned model also on what users meet: the top words, trained ones included
        assert name == "base" or {"vocabulary/top1k/spelling_exact_match", "vocabulary/top5k/spelling_exact_match",
                                  "vocabulary/train_questions/spelling_exact_match"} <= set(metrics)
        assert held_out <= set(metrics)
        details = json.loads((repo / "metrics" / f"{name}_details.json").read_text())
        for split in ("val", "test"):
            assert details[split]["n_items"] == items[split]
            assert details[split]["spelling_exact_match"]["n"] == items[split] // 3
            assert list(details[split]["groups"]) == subsets
            assert details[split]["groups"]["held_out"]["spelling_exact_match"]["n"] == items[split] // 6
            for m in TASK_METRICS:
                value = metrics[f"{split}/{m}"]
                assert 0.0 <= value <= 1.0
                assert details[split][m]["ci_low"] <= value <= details[split][m]["ci_high"]
        breakdown = json.loads((repo / "metrics" / f"{name}_breakdown.json").read_text())
        assert set(breakdown["test"]) == {"by_length", "by_position", "by_tokens", "by_band"}
        common = breakdown["test"]["by_band"]["common"]
        assert {"n", "ci_low", "ci_high"} <= set(common["intervals"]["spelling_exact_match"])
        preds = (repo / "metrics" / "predictions" / f"{name}.jsonl").read_text().splitlines()
        scored_vocabulary = len((repo / "data/vocabulary.jsonl").read_text().splitlines()) if name == "eval" else 0
        assert len(preds) == items["val"] + items["test"] + scored_vocabulary
        assert {"question", "answer", "reply", "correct", "split"} <= set(json.loads(preds[0]))
    # report
    for png in ("loss", "base_vs_finetuned", "accuracy_by_length", "accuracy_by_position"):
        assert (repo / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    report = (repo / "plots" / "report.md").read_text()
    assert "| test/spelling_exact_match |" in report and "| common words, held-out wordings | test |" in report
    assert "What users meet" in report and "trained words included" in report
    headline = json.loads((repo / "metrics/headline.json").read_text())
    assert set(headline) == {"val", "vocab", "common"} and set(headline["vocab"]) == {"spell"}

    # `dvc exp show` lists the experiment with its params and metrics
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    exps = [e for row in shown for e in (row.get("experiments") or [])]
    assert exps, shown
    data = exps[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["max_steps"] == TINY_OVERRIDES["train.max_steps"]
    # Only the headline numbers are DVC metrics (the table stays readable); the full scores
    # and run facts are outputs.
    assert set(data["metrics"]) == {"metrics/headline.json"}
    headline = data["metrics"]["metrics/headline.json"]["data"]
    scores = json.loads((repo / "metrics" / "eval.json").read_text())
    assert headline["val"]["letter"] == round(scores["val/letter_position_accuracy"], 3)
    assert headline["common"]["spell"] == round(scores["test/common/spelling_exact_match"], 3)
    assert headline["vocab"]["spell"] == round(scores["vocabulary/top1k/spelling_exact_match"], 3)
    assert len(flatten(headline)) == 4

    # `dvc plots show` knows the training curves
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    assert any("train/loss.tsv" in key for key in json.dumps(plots).split('"'))

    # A second run with nothing changed reruns nothing but the params check.
    again = exp_run(repo, overrides)
    assert "Running stage 'train'" not in again.stdout + again.stderr
    assert "Running stage 'evaluate_base'" not in again.stdout + again.stderr

    # Bad params: one clear line, non-zero exit, and every output left as it was.
    before = outputs(repo)
    bad = exp_run(repo, {**overrides, "lora.r": 0}, check=False)
    assert bad.returncode != 0
    assert "params.yaml: lora.r = 0: Input should be greater than 0" in bad.stdout + bad.stderr
    assert outputs(repo) == before
    assert not (repo / ".spelltune/params.ok").exists()  # validate's marker: params are not valid

    # DVC leaves the failed -S value in params.yaml; a user restores it the same way.
    run(["git", "checkout", "--", "params.yaml"], repo)

    # A new lr reruns train and evaluate, not prepare or the base model's evaluation.
    # Its best is picked by letter accuracy, which the tiny model never lifts above 0: the
    # first evaluation (step 3) stays the best, and step 3 is no save step (every 2): its
    # checkpoint is written anyway and exported as the best.
    other = exp_run(repo, {**overrides, "train.lr": 5e-4, "train.early_stop_metric": "val/letter_position_accuracy"})
    log = other.stdout + other.stderr
    assert "Running stage 'train'" in log and "Running stage 'evaluate'" in log
    for stage in ("prepare", "prepare_model", "evaluate_base"):
        assert f"Running stage '{stage}'" not in log
    assert json.loads((repo / "metrics" / "summary.json").read_text())["best_step"] == 3
    assert sorted(p.name for p in (repo / "checkpoints").iterdir()) == ["adapter", "checkpoint-3", "checkpoint-6"]

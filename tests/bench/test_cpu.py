"""The benchmark runs end to end on the tiny model and writes every figure it promises
(its numbers are measured on the real model by `make bench`, never asserted here)."""

from __future__ import annotations

import json

from spelltune.bench import cpu as bench


def test_bench_smoke(tiny_model, tmp_path, monkeypatch):
    from spelltune.files import write_jsonl
    from spelltune.task.questions import letter_question, spelling_question

    words = ["cat", "house", "banana", "river", "planet", "stone", "garden", "yellow"]
    items = [q for w in words for q in (spelling_question(w), letter_question(w, 2))]
    for split in ("train", "validation"):
        write_jsonl(items, tmp_path / f"{split}.jsonl")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)  # no DVC repository here: the no-op `dvc exp run` is not timed
    out = tmp_path / "results.json"
    assert (
        bench.main(
            [
                "--model",
                str(tiny_model),
                "--data",
                str(tmp_path),
                "--steps",
                "2",
                "--warmup",
                "1",
                "--batch",
                "4",
                "--eval-items",
                "12",
                "--tracking-pairs",
                "2",
                "--startup-runs",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())
    for key in ("train_speedup", "compact_prompt_speedup", "answer_logits_speedup", "packing_speedup",
                "packed_attention_speedup", "no_dropout_speedup", "all_threads_speedup", "spaced_speedup", "mfu",
                "eval_letter_position_speedup", "eval_spelling_speedup", "gemm_gflops"):
        assert results[key] > 0, key
    for recipe in ("plain", "ours", "padded", "masked", "dropout", "spaced", "half_threads", "chat_prompt",
                   "full_logits"):
        assert results[f"train_{recipe}"]["examples_per_second"] > 0
        assert results[f"train_{recipe}"]["nonpad_tokens_per_second"] > 0
    assert len(results["train_ours"]["examples_per_second_runs"]) == 3
    assert results["train_ours"]["examples_per_second"] == sorted(results["train_ours"]["examples_per_second_runs"])[1]
    assert results["train_half_threads"]["threads"] == max(1, results["threads"] // 2)
    tracked, untracked = results["tracking"]["seconds_on"], results["tracking"]["seconds_off"]
    assert len(tracked) == len(untracked) == 2  # two interleaved pairs (their values are never asserted)
    for task in ("letter_position", "spelling"):  # every item of each task through every path
        rates = results["eval"][task]
        paths = ("loop", "batched", "batched_x2", "batched_x4")
        assert rates["items"] > 0 and all(rates[f"{p}_items_per_second"] > 0 for p in paths)
        assert rates["loop_identical"] == 1.0 and all(0.0 <= rates[f"{p}_identical"] <= 1.0 for p in paths)
    chat_figure = "chat_seconds_10_letter_spelling"  # written for the docs; its value is never asserted
    assert chat_figure in results["eval"]
    noop = results["overheads"]
    not_timed = noop["noop_dvc_exp_run_seconds"] is None
    assert not_timed and noop["noop_dvc_exp_run_note"]  # no DVC repository: skipped, with the reason
    # A real train-stage process on the tiny model reached its first step and reported when
    # (the figure itself is never asserted); the median of one run is that run.
    startup_runs, startup_median = noop["train_seconds_to_first_step_runs"], noop["train_seconds_to_first_step"]
    assert len(startup_runs) == 1 and startup_median == startup_runs[0]

"""The model card (modeling/card.py, its text modeling/card_markdown.py), without a model."""

from __future__ import annotations

import json

from spelltune.metric_names import EVAL_METRICS
from spelltune.modeling import card, card_markdown
from spelltune.params import parse

DETAILS = {  # metrics/eval_details.json as the evaluate stage writes it
    "val": {"letter_position_accuracy": {"value": 0.6, "n": 200, "ci_low": 0.53, "ci_high": 0.67}},
    "test": {
        "letter_position_accuracy": {"value": 0.61, "n": 200, "ci_low": 0.54, "ci_high": 0.67},
        "spelling_exact_match": {"value": 0.22, "n": 100, "ci_low": 0.15, "ci_high": 0.31},
        "char_error_rate": {"value": 0.2, "n": 100, "ci_low": 0.17, "ci_high": 0.23},
    },
}


def test_base_model_names():
    assert card.base_model_name("embedded") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.base_model_name("org/model") == "org/model"


def test_evaluation_reads_details_then_falls_back_to_predictions():
    files = {"metrics/eval_details.json": json.dumps(DETAILS)}
    details, where = card.evaluation(files.get)
    assert details == DETAILS and where == "metrics/eval_details.json"
    rows = [{"split": "test", "task": "letter_position", "correct": i < 3, "cer": None} for i in range(4)]
    rows += [{"split": "test", "task": "spelling", "correct": False, "cer": 0.5}]
    details, where = card.evaluation({"metrics/predictions/eval.jsonl": "\n".join(map(json.dumps, rows))}.get)
    letters = details["test"]["letter_position_accuracy"]
    assert (letters["value"], letters["n"]) == (0.75, 4) and letters["ci_low"] < 0.75 < letters["ci_high"]
    assert where.startswith("metrics/predictions/eval.jsonl")
    assert card.evaluation({}.get) == (None, "")


def test_the_card_recomputes_exactly_what_evaluate_writes():
    """Without *_details.json the card scores the predictions with the evaluate stage's own
    functions, so its intervals (the character error rate's bootstrap too) equal the file's."""
    from spelltune.task.scoring import details, group_details

    rows = [{"split": "test", "task": "letter_position", "correct": i % 3 == 0, "cer": None,
             "band": "common" if i % 2 else "rare", "wording": "canonical"} for i in range(30)]
    rows += [{"split": "test", "task": "spelling", "correct": i % 4 == 0, "cer": (i % 5) / 7,
              "band": "common", "wording": "held_out"} for i in range(20)]
    written = {**details(rows), "n_items": len(rows), "groups": group_details(rows)}  # as evaluate writes it
    recomputed, _ = card.evaluation({"metrics/predictions/eval.jsonl": "\n".join(map(json.dumps, rows))}.get)
    assert recomputed == {"test": written}
    text = card_markdown.render({}, details=recomputed, details_source="x")
    cer = written["char_error_rate"]
    assert f"| {cer['value']:.3f} | {cer['ci_low']:.3f}–{cer['ci_high']:.3f} | 20 |" in text
    assert "| test | common words (rank ≤ 2,000) | letter-position accuracy |" in text


def test_every_metric_has_a_label_on_the_card():
    assert set(card_markdown.METRIC_LABELS) == set(EVAL_METRICS)


def test_card_metadata_and_intervals():
    from huggingface_hub import ModelCard

    params = parse({"model": {"source": "embedded"}, "lora": {"r": 8}})
    facts = card.training_facts(params, None)
    text = card_markdown.render(facts, details=DETAILS, details_source="metrics/eval_details.json",
                                extra_params={"data": {"train_words": 500}})
    meta = ModelCard(text).data
    assert meta.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta.library_name == "peft"
    spelling = next(r for r in meta.eval_results if r.dataset_split == "test" and r.metric_name.startswith("spelling"))
    assert spelling.metric_value == 0.22 and spelling.metric_args == {"ci_low": 0.15, "ci_high": 0.31, "n": 100}
    assert "| test | spelling exact match | 0.220 | 0.150–0.310 | 100 |" in text
    assert "dvc exp run -S lora.r=8 -S data.train_words=500" in text
    assert "Q4_1 GGUF" in text  # the embedded model's limitation
    assert card.facts_of_card(text)["params"]["lora"]["r"] == 8


def test_reproduce_names_the_commit_and_quotes_a_blank_separator_readably():
    import shlex

    facts = {"params": {"data": {"spelling_separator": " ", "train_words": 400}, "train": {"lr": 0.003}}}
    command = card.reproduce_command(facts)
    assert "-S \"data.spelling_separator=' '\"" in command and "'\"'\"'" not in command
    assert shlex.split(command)[3:6] == ["-S", "data.spelling_separator=' '", "-S"]  # the shell reads what DVC needs
    assert card.shell_word("train.lr=0.003") == "train.lr=0.003"
    assert card.shell_word("x=$HOME'") == "'x=$HOME'\"'\"''"  # expandable text keeps single quotes

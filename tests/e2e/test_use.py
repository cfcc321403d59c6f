"""Using a trained adapter: `spelltune ask`, `predict`, `card` and `export` on a real
repository trained with `dvc exp run` on the tiny model (two experiments: `first`, then
`second` in the workspace)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY_OVERRIDES, copy_project, git_commit_all, run, set_args
from spelltune.task.questions import ITEMS_PER_HELD_OUT_WORD

pytestmark = pytest.mark.e2e

N_TEST = ITEMS_PER_HELD_OUT_WORD * TINY_OVERRIDES["data.test_words"]  # evaluate scores every test item
EVAL_BATCH = str(TINY_OVERRIDES["eval.batch_size"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model, other_tiny) -> Path:
    """Experiment `first` on the tiny model; then `second`, in the workspace, on another base model."""
    repo = tmp_path_factory.mktemp("use") / "repo"
    copy_project(repo)
    git_commit_all(repo)
    overrides = {"model.source": str(tiny_model), **TINY_OVERRIDES}
    run(["dvc", "exp", "run", "-n", "first", *set_args(overrides)], repo, timeout=900)
    second = {**overrides, "model.source": str(other_tiny), "train.lr": 5e-3, "lora.r": 4}
    run(["dvc", "exp", "run", "-n", "second", *set_args(second)], repo, timeout=900)
    return repo


def spelltune(repo: Path, *args: str, check: bool = True):
    return run([sys.executable, "-m", "spelltune.cli", *args], repo, check=check, timeout=600)


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def eval_rows(repo: Path, exp: str | None = None) -> list[dict]:
    """The evaluate stage's own test predictions (of the workspace, or of an experiment)."""
    from spelltune import store

    rev = store.resolve(exp, repo) if exp else None
    path = "metrics/predictions/eval.jsonl"
    text = (repo / path).read_text() if rev is None else run(["git", "show", f"{rev}:{path}"], repo).stdout
    return [r for r in read_jsonl(text) if r["split"] == "test"]


def test_train_writes_a_model_card_and_names_the_real_base_model(trained, other_tiny, tmp_path):
    from huggingface_hub import ModelCard
    from peft import AutoPeftModelForCausalLM

    adapter = trained / "checkpoints" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(other_tiny)  # not the local data/base_model
    meta = ModelCard.load(adapter / "README.md").data
    assert meta.base_model == str(other_tiny) and meta.library_name == "peft"
    assert {"lora", "peft", "spelling"} <= set(meta.tags)
    facts = meta.to_dict()["spelltune"]
    assert facts["prompt_format"] == "compact" and facts["params"]["lora"]["r"] == 4
    assert facts["data"]["train_items"] == len((trained / "data/train.jsonl").read_text().splitlines())
    text = (adapter / "README.md").read_text()
    for section in ("## Prompt format", "## Evaluation", "## Limitations", "## Reproduce"):
        assert section in text
    assert "-S lora.r=4" in text and "-S train.lr=0.005" in text
    # Plain PEFT loads it from anywhere: the config names a base model that exists.
    moved = shutil.copytree(adapter, tmp_path / "elsewhere")
    model = AutoPeftModelForCausalLM.from_pretrained(moved)
    assert model.peft_config["default"].r == 4


def test_ask_answers_like_evaluation(trained):
    rows = eval_rows(trained)
    out = spelltune(trained, "ask", "--batch-size", EVAL_BATCH, *[r["question"] for r in rows])
    replies = [line.split("\n", 1)[1] for line in out.stdout.strip().split("\n\n")]
    assert replies == [r["reply"] or "(empty reply)" for r in rows]
    assert "workspace" in out.stderr and "s from the command's start" in out.stderr


def test_chat_loads_once_and_answers_each_line_like_ask(trained):
    rows = eval_rows(trained)[:4]
    typed = "\n".join([rows[0]["question"], "", *[r["question"] for r in rows[1:]]]) + "\n"
    out = run([sys.executable, "-m", "spelltune.cli", "chat"], trained, input=typed, timeout=600)
    assert out.stdout.splitlines() == [r["reply"] or "(empty reply)" for r in rows]  # the empty line is skipped
    assert out.stderr.count("loaded in") == 1 and out.stderr.count(" s)") == len(rows)


def test_ask_base_side_by_side(trained):
    question = "What is the 3rd letter of 'banana'?"
    out = spelltune(trained, "ask", "--base", question).stdout.splitlines()
    assert [line.split(":")[0] for line in out] == ["base", "fine-tuned"]


def adapter_digest_in_cache(repo: Path, rev: str) -> str:
    """md5 of checkpoints/adapter/adapter_model.safetensors as the experiment's dvc.lock records it."""
    import yaml

    from spelltune import store

    rev = store.resolve(rev, repo)
    lock = yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"], repo).stdout)
    dir_md5 = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "checkpoints")
    listing = json.loads((repo / ".dvc/cache/files/md5" / dir_md5[:2] / dir_md5[2:]).read_text())
    return next(e["md5"] for e in listing if e["relpath"] == "adapter/adapter_model.safetensors")


def tree_state(repo: Path) -> tuple:
    files = sorted(p for d in ("checkpoints", "metrics", "data") for p in (repo / d).rglob("*") if p.is_file())
    return (run(["git", "status", "--porcelain"], repo).stdout,
            {str(p): hashlib.md5(p.read_bytes()).hexdigest() for p in files})


def test_an_experiments_adapter_without_touching_the_workspace(trained, tmp_path):
    """`first` was trained on another base model than the workspace's: its adapter and its
    base model both come out of the DVC cache."""
    before = tree_state(trained)
    rows = eval_rows(trained, "first")
    out = spelltune(trained, "ask", "--exp", "first", "--batch-size", EVAL_BATCH, *[r["question"] for r in rows])
    assert [line.split("\n", 1)[1] for line in out.stdout.strip().split("\n\n")] == [
        r["reply"] or "(empty reply)" for r in rows
    ]
    assert "experiment first" in out.stderr
    # The adapter it read is that experiment's, from the DVC cache (first: r=16, workspace: r=4).
    spelltune(trained, "export", "--exp", "first", "--peft", str(tmp_path / "first"))
    exported = hashlib.md5((tmp_path / "first" / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert exported == adapter_digest_in_cache(trained, "first")
    assert json.loads((tmp_path / "first" / "adapter_config.json").read_text())["r"] == 16
    assert tree_state(trained) == before
    bad = spelltune(trained, "ask", "--exp", "nope", "x", check=False)
    assert bad.returncode == 2 and "--exp nope: no such experiment" in bad.stderr and "first, second" in bad.stderr


def test_predict_words_and_questions(trained, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("banana\n\ncat\n")
    out = tmp_path / "out.jsonl"
    proc = spelltune(trained, "predict", str(words), "-o", str(out))
    rows = read_jsonl(out.read_text())
    # Every letter position of each word, then its spelling question.
    assert [(r["word"], r["task"], r.get("position")) for r in rows] == [
        *[("banana", "letter_position", p) for p in range(1, 7)], ("banana", "spelling", None),
        *[("cat", "letter_position", p) for p in range(1, 4)], ("cat", "spelling", None)]
    separator = yaml.safe_load((trained / "params.yaml").read_text())["data"]["spelling_separator"]
    assert rows[5]["question"] == "What is the last letter of 'banana'?"
    assert rows[6]["answer"] == separator.join("banana")
    assert [r["line"] for r in rows] == [1] * 7 + [3] * 4
    assert {"reply", "parsed", "correct"} <= set(rows[0]) and "cer" in rows[6]
    assert "generate" in proc.stderr and "11 answers" in proc.stderr  # the progress bar, the summary

    # The test split itself, as JSON lines: the same replies and scores as the evaluate stage.
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join((trained / "data/test.jsonl").read_text().splitlines(keepends=True)[:N_TEST]))
    spelltune(trained, "predict", str(questions), "-o", str(out), "--batch-size", EVAL_BATCH)
    expected = eval_rows(trained)
    got = read_jsonl(out.read_text())
    assert [(r["reply"], r["correct"]) for r in got] == [(r["reply"], r["correct"]) for r in expected]


def test_predict_errors_are_one_line(trained, tmp_path, tiny_model, other_tiny, capsys):
    from spelltune.cli import main

    def error(*args: str) -> str:
        # In this process (the CLI's main, as the console script calls it): no start-up per case.
        repo = [] if "--repo" in args else ["--repo", str(trained)]
        capsys.readouterr()
        assert main(["predict", *args, *repo]) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], err  # (after the loading bars, if any)
        return errors[0]

    words = tmp_path / "words.txt"
    words.write_text("cat\n")
    assert "no adapter_config.json" in error(str(words), "--adapter", str(tmp_path / "missing"))
    (tmp_path / "empty.txt").write_text("\n\n")
    assert "empty.txt: empty, nothing to predict" in error(str(tmp_path / "empty.txt"))
    (tmp_path / "bad.jsonl").write_text('{"question": "Spell \'dog\' letter by letter."}\n\n{"question": \n')
    assert "bad.jsonl line 3: not valid JSON" in error(str(tmp_path / "bad.jsonl"))
    (tmp_path / "keys.jsonl").write_text('{"text": "dog"}\n')
    assert "keys.jsonl line 1: needs a \"question\" or a \"word\"" in error(str(tmp_path / "keys.jsonl"))
    (tmp_path / "words2.txt").write_text("cat\nice cream\n")
    assert "words2.txt line 2: 'ice cream' is not a word" in error(str(tmp_path / "words2.txt"))
    (tmp_path / "long.txt").write_text("a" * 3000 + "\n")  # an hour of generation, refused at once
    assert f"long.txt line 1: {'a' * 20!r}... has 3000 letters; at most 40" in error(str(tmp_path / "long.txt"))
    assert "no such file" in error(str(tmp_path / "nope.txt"))
    assert "that is the input file" in error(str(words), "-o", str(words)) and words.read_text() == "cat\n"
    assert f"{words} is a file, not a directory" in error(str(words), "-o", f"{words}/out.jsonl")
    proc = spelltune(trained, "ask", "--threads", "-1", "Spell 'cat' letter by letter.", check=False)
    assert proc.returncode == 2 and "'-1': give a whole number of 1 or more" in proc.stderr.strip().splitlines()[-1]
    # An adapter trained on another base model: experiment `first`'s, in the workspace of `second`.
    spelltune(trained, "export", "--exp", "first", "--peft", str(tmp_path / "first"))
    line = error(str(words), "--adapter", str(tmp_path / "first"))
    assert f"trained on base model {str(tiny_model)!r}" in line and str(other_tiny) in line
    # A base model of the name the adapter asks for, but of other shapes: one line too.
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    wide = tmp_path / "wide-repo"
    base = wide / "data" / "base_model"
    config = AutoConfig.from_pretrained(tiny_model)
    config.hidden_size, config.intermediate_size = 64, 96
    LlamaForCausalLM(config).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(base)
    (wide / "params.yaml").write_text(f"model:\n  source: {base}\n")
    misfit = shutil.copytree(tmp_path / "first", tmp_path / "misfit")
    adapter_config = json.loads((misfit / "adapter_config.json").read_text())
    (misfit / "adapter_config.json").write_text(json.dumps({**adapter_config, "base_model_name_or_path": str(base)}))
    line = error(str(words), "--repo", str(wide), "--adapter", str(misfit))
    assert "does not fit the base model" in line and "size mismatch" in line
    # A pickled adapter_model.bin that holds more than tensors: refused unread, one line.
    import argparse

    import torch

    pickled = shutil.copytree(trained / "checkpoints" / "adapter", tmp_path / "pickled")
    (pickled / "adapter_model.safetensors").unlink()
    torch.save({"x": argparse.Namespace(a=1)}, pickled / "adapter_model.bin")
    assert "adapter_model.bin pickles more than tensors; refused unread" in error(str(words), "--adapter", str(pickled))
    # No adapter in the workspace at all.
    assert "no trained adapter" in error(str(words), "--repo", str(tmp_path))


def test_card_has_evaluates_metrics_with_intervals(trained):
    from huggingface_hub import ModelCard

    text = spelltune(trained, "card").stdout
    card = ModelCard(text)
    results = {(r.dataset_split, r.metric_name.split(",")[0]): r for r in card.data.eval_results}
    letters = results[("test", "letter-position accuracy")]
    test_items = read_jsonl((trained / "data/test.jsonl").read_text())[:N_TEST]
    assert letters.metric_args["n"] == sum(it["task"] == "letter_position" for it in test_items)
    assert letters.metric_args["ci_low"] <= letters.metric_value <= letters.metric_args["ci_high"]
    assert "| test | spelling exact match |" in text and "| base model |" in text
    assert "-S data.train_words=40" in text and "-S data.test_words=4" in text


def test_export_merged_and_gguf_load_without_peft_and_answer_the_same(trained, tmp_path):
    out, gguf_file = tmp_path / "merged", tmp_path / "gguf" / "model.gguf"
    spelltune(trained, "export", "--merged", str(out), "--gguf", str(gguf_file))
    assert not (out / "adapter_config.json").exists()
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()
    letter_answer = yaml.safe_load((trained / "params.yaml").read_text())["data"]["letter_answer"]
    # A fresh interpreter in which PEFT cannot be imported: plain transformers loads it.
    script = f"""
import json, sys
sys.modules["peft"] = None
from transformers import AutoModelForCausalLM, AutoTokenizer
from spelltune.modeling.generation import generate_replies
from spelltune.task.prompts import render_prompt
model = AutoModelForCausalLM.from_pretrained({str(out)!r})
tokenizer = AutoTokenizer.from_pretrained({str(out)!r})
items = [json.loads(l) for l in open("data/test.jsonl")][:{N_TEST}]
q = items[0]["question"]
chat = tokenizer.apply_chat_template([{{"role": "user", "content": q}}], tokenize=False, add_generation_prompt=True)
# The GGUF as transformers reads it back (de-permuted, its own tokenizer from the file's vocabulary).
g_model = AutoModelForCausalLM.from_pretrained({str(gguf_file.parent)!r}, gguf_file="model.gguf")
g_tokenizer = AutoTokenizer.from_pretrained({str(gguf_file.parent)!r}, gguf_file="model.gguf")
how = dict(letter_answer={letter_answer!r})
print(json.dumps({{"replies": generate_replies(model, tokenizer, items, "compact", {EVAL_BATCH}, **how),
                  "gguf_replies": generate_replies(g_model, g_tokenizer, items, "compact", {EVAL_BATCH}, **how),
                  "same_prompt": chat == render_prompt(q, "compact", tokenizer)}}))
"""
    result = json.loads(run([sys.executable, "-c", script], trained).stdout.strip().splitlines()[-1])
    assert result["replies"] == [r["reply"] for r in eval_rows(trained)]
    assert result["gguf_replies"] == result["replies"]
    assert result["same_prompt"]  # the saved chat template renders the trained prompt
    assert "library_name: transformers" in (out / "README.md").read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()} == {f.name: 0o666 & ~umask for f in out.iterdir()}
    # A second export never writes over the first (or a user's files): one line, exit 2.
    state = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    for flag, target, says in (("--merged", out, "not an empty directory (holds "), ("--gguf", gguf_file, "exists")):
        proc = spelltune(trained, "export", flag, str(target), check=False)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and last.startswith("error: export ") and says in last, proc.stderr
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == state
    from gguf import GGUFReader

    fields = GGUFReader(gguf_file).fields
    assert fields["general.architecture"].contents() == "llama" and fields["tokenizer.ggml.pre"].contents() == "smollm"
    assert (
        fields["tokenizer.chat_template"].contents().startswith("{%- for message in messages %}")
    )  # the trained prompt


@pytest.mark.parametrize("word_list", ["common", "wonderwords"])
def test_outside_scores_words_that_were_never_trained_on(trained, tmp_path, word_list):
    from spelltune.params import load
    from spelltune.task.questions import ranked_words, split_words

    out = tmp_path / "outside.json"
    proc = spelltune(trained, "outside", "--list", word_list, "--words", "20", "--out", str(out))
    result = json.loads(out.read_text())
    # Canonical and held-out wordings of the same questions: 20 spelling items each.
    assert result["words"] == 20 and result["spelling_exact_match"]["n"] == 40
    assert result["letter_position_accuracy"]["n"] == 80
    assert result["groups"]["held_out"]["spelling_exact_match"]["n"] == 20
    assert "outside/spelling_exact_match:" in proc.stdout and "held_out wording:" in proc.stdout
    rows = read_jsonl((tmp_path / "outside.jsonl").read_text())
    data = load(trained / "params.yaml").data
    trained_words = set(split_words(ranked_words(data.min_word_length, data.max_word_length), data)["train"])
    assert not {r["word"] for r in rows} & trained_words
    if word_list == "common":  # the most frequent words first: mostly wordfreq's common band
        assert sum(r["band"] == "common" for r in rows) > len(rows) / 2

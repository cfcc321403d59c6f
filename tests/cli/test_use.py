"""`spelltune chat`, `ask`, `predict` and `export --peft` as a user drives them (cli/use.py), on a
repository that holds the tiny model and a LoRA adapter of it, built in seconds without a
`dvc exp run` (e2e/test_use.py trains real ones). Chat's Ctrl-C and Ctrl-D go through a real
terminal (a pty, pexpect)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import user_env
from spelltune.cli import main
from spelltune.experiments.use import EXAMPLES


def cpu_user_env() -> dict:
    return {**user_env(), "CUDA_VISIBLE_DEVICES": ""}  # a CPU machine, also on a GPU box


TRAINED_ITEM = {"question": "Spell 'ox' letter by letter.", "answer": "o-x", "word": "ox", "task": "spelling",
                "position": None}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model) -> Path:
    """data/base_model (the tiny model), its adapter in checkpoints/adapter (LoRA B random, so
    that it changes the replies), and data/train.jsonl: the word "ox" was trained on."""
    import torch

    from spelltune.modeling.base import load_base_model
    from spelltune.modeling.lora import build_lora_model, save_adapter
    from spelltune.params import LoraParams

    repo = tmp_path_factory.mktemp("use-cli") / "repo"
    shutil.copytree(tiny_model, repo / "data" / "base_model")
    (repo / "params.yaml").write_text(f"model:\n  source: {tiny_model}\n")
    torch.manual_seed(0)
    model = build_lora_model(load_base_model(tiny_model)[0], LoraParams(r=4))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    save_adapter(model, repo / "checkpoints" / "adapter", str(tiny_model))
    (repo / "data" / "train.jsonl").write_text(json.dumps(TRAINED_ITEM) + "\n")
    return repo


@pytest.fixture
def quiet_state(monkeypatch):
    """chat and ask silence tqdm and transformers' bars in their process: here, for this test only."""
    from transformers.utils import logging as hf_logging

    monkeypatch.setenv("TQDM_DISABLE", "1")
    yield
    hf_logging.enable_progress_bar()


def one_error(capsys, *args: str) -> str:
    """Run the command in this process, as the console script does: exit 2 and one `error:`
    line on stderr (after any loading bars), nothing on stdout."""
    capsys.readouterr()
    assert main(list(args)) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], captured.err
    assert captured.out == ""
    return errors[0]


# ------------------------------------------------------------------------------ chat


def test_chat_help_says_how_to_leave(capsys):
    with pytest.raises(SystemExit) as done:
        main(["chat", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Leave with" in text and all(k in text for k in ("quit", "exit", ":q", "Ctrl-D", "Ctrl-C"))


@pytest.mark.parametrize("leave", ["quit", "exit", ":q"])
def test_chat_quit_words_leave_and_out_of_scope_questions_get_one_line(repo, leave, capsys, monkeypatch,
                                                                       quiet_state):
    typed = ["Spell 'cat' letter by letter.", "hello", "How many letters are in 'apple'?",
             "Spell '" + "a" * 10_000 + "' letter by letter.", leave, "Spell 'dog' letter by letter."]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(typed) + "\n"))
    assert main(["chat", "--repo", str(repo)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4, out  # an answer, three refusals; nothing after `leave`
    for refusal, question in zip(out[1:3], typed[1:3]):
        assert refusal.startswith(repr(question)) and "not a spelling or letter question" in refusal
        assert all(f'"{example}"' in refusal for example in EXAMPLES)
    assert out[3] == f"chat: {'a' * 20!r}... has 10000 letters; at most 40"  # predict's limit, predict's words


def spawn_chat(repo: Path, *argv: str, script: Path | None = None):
    """`spelltune chat` on a terminal of its own (a pty): what it prints comes back in `transcript`."""
    import pexpect

    args = [str(script)] if script else ["-m", "spelltune.cli"]
    child = pexpect.spawn(sys.executable, [*args, "chat", *argv], cwd=str(repo), env=cpu_user_env(),
                          encoding="utf-8", timeout=180, dimensions=(24, 200))
    child.logfile_read = io.StringIO()
    return child


def ended(child) -> tuple[int, str]:
    """(exit status, everything it printed), once it has ended."""
    import pexpect

    child.expect(pexpect.EOF)
    child.close()
    assert child.signalstatus is None, f"killed by signal {child.signalstatus}"
    return child.exitstatus, child.logfile_read.getvalue()


SLOW_MODEL = """
import sys, time
import spelltune.experiments.use as use
use.tuned_model = lambda source: (None, None)  # no model to load: the prompt comes at once

def answering(*args, **kwargs):  # an answer that takes a while: Ctrl-C lands in the middle of it
    print("(answering)", flush=True)
    time.sleep(600)

use.tuned_replies = answering
from spelltune.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def slow_chat(tmp_path) -> Path:
    script = tmp_path / "slow_chat.py"
    script.write_text(SLOW_MODEL)
    return script


def test_chat_in_a_terminal_refuses_out_of_scope_and_ctrl_d_leaves_on_a_new_line(repo, slow_chat):
    child = spawn_chat(repo, script=slow_chat)
    child.expect_exact("> ")
    child.sendline("hello")
    child.expect_exact("not a spelling or letter question")
    child.expect_exact("> ")
    child.sendcontrol("d")
    status, transcript = ended(child)
    assert status == 0 and "Traceback" not in transcript, transcript
    assert transcript.endswith("> \r\n"), repr(transcript[-80:])  # the shell's prompt on a line of its own


def test_ctrl_c_while_loading_leaves_with_one_line(repo):
    child = spawn_chat(repo)
    child.expect_exact("(loading workspace")  # then torch is imported and the model loaded: seconds
    child.sendcontrol("c")
    status, transcript = ended(child)
    assert status == 130 and "Traceback" not in transcript, transcript
    assert transcript.rstrip().splitlines()[-1] == "bye"


@pytest.mark.parametrize("when", ["at the prompt", "mid-answer"])
def test_ctrl_c_leaves_with_one_line(repo, slow_chat, when):
    child = spawn_chat(repo, script=slow_chat)
    child.expect_exact("> ")
    if when == "mid-answer":
        child.sendline("Spell 'cat' letter by letter.")
        child.expect_exact("(answering)")
    child.sendcontrol("c")
    status, transcript = ended(child)
    assert status == 130 and "Traceback" not in transcript, transcript
    *_, echoed, last = transcript.rstrip().splitlines()
    assert echoed.endswith("^C") and last == "bye", repr(transcript[-80:])


# ------------------------------------------------------------------------------- ask


def test_ask_refuses_questions_out_of_scope_and_words_too_long(repo, capsys):
    for question in ("hello", "How many letters are in 'apple'?"):
        line = one_error(capsys, "ask", question, "--repo", str(repo))
        assert line == (f"error: ask: {question!r} is not a spelling or letter question it can answer; ask e.g. "
                        "\"What is the 3rd letter of 'banana'?\" or \"Spell 'banana' letter by letter.\"")
    # A word of 10,000 letters: refused at once, as predict refuses it (not hours of generation).
    line = one_error(capsys, "ask", "Spell '" + "a" * 10_000 + "' letter by letter.", "--repo", str(repo))
    assert line == f"error: ask: {'a' * 20!r}... has 10000 letters; at most 40"


# --------------------------------------------------------------------------- predict


def test_predict_refuses_a_hard_link_to_its_input(repo, tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_text("cat\n")
    link = tmp_path / "answers.jsonl"
    os.link(words, link)
    line = one_error(capsys, "predict", str(words), "-o", str(link), "--repo", str(repo))
    assert f"predict -o {link}: that is the input file {words}" in line
    assert words.read_text() == "cat\n"


def test_predict_marks_the_words_the_adapter_trained_on(repo, tmp_path, capsys):
    from spelltune.experiments import use

    words = tmp_path / "words.txt"
    words.write_text("ox\nit\n")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(words), "-o", str(out), "--repo", str(repo)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["word"], r["trained"]) for r in rows] == [("ox", True)] * 3 + [("it", False)] * 3
    assert "3 of 6 about words it trained on" in capsys.readouterr().err
    # An adapter directory alone: its training words are not at hand.
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question": "What is the last letter of 'Ox'?"}) + "\n")
    assert main(["predict", str(questions), "-o", str(out), "--adapter", str(repo / "checkpoints" / "adapter"),
                 "--repo", str(repo)]) == 0
    assert {json.loads(line)["trained"] for line in out.read_text().splitlines()} == {"unknown"}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "`trained`: true" in text and '"unknown"' in text
    assert f"at most {use.MAX_WORD_LETTERS} letters" in text and f"{use.CHUNK_BATCHES} batches" in text


def vm_peak_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


PEAK_MB = 1024  # the tiny model's predict: ~0.5 GB. Holding every question of the input: 2 GB and more here


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the child's VmHWM from /proc")
def test_predict_streams_a_large_input_in_bounded_memory(repo, tmp_path):
    """4 MB of one word, a million lines (4 million questions): the first answers are written
    while the process stays far below what holding all the questions takes."""
    words = tmp_path / "words.txt"
    words.write_text("cat\n" * 1_000_000)
    out, log = tmp_path / "out.jsonl", tmp_path / "stderr.txt"
    with open(log, "w") as err:
        child = subprocess.Popen([sys.executable, "-m", "spelltune.cli", "predict", str(words), "-o", str(out),
                                  "--batch-size", "1"], cwd=repo, env=cpu_user_env(), stderr=err)
    try:
        peak, answered = 0.0, 0
        while child.poll() is None and peak < PEAK_MB:
            peak = max(peak, vm_peak_mb(child.pid))
            answered = out.read_text().count("\n") if out.exists() else 0
            if answered:
                break
            time.sleep(0.2)
    finally:
        child.kill()
        child.wait()
    assert answered and peak < PEAK_MB, f"{answered} answers, peak {peak:.0f} MB\n{log.read_text()[-2000:]}"
    first = json.loads(out.read_text().splitlines()[0])
    assert (first["word"], first["position"], first["line"]) == ("cat", 1, 1)


# ---------------------------------------------------------------------------- export


def test_export_peft_refuses_a_pickled_adapter(repo, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    pickled = shutil.copytree(repo / "checkpoints" / "adapter", tmp_path / "pickled")
    weights = pickled / "adapter_model.safetensors"
    torch.save(load_file(weights), pickled / "adapter_model.bin")  # plain tensors: PEFT itself would load it
    weights.unlink()
    target = tmp_path / "shared"
    line = one_error(capsys, "export", "--adapter", str(pickled), "--peft", str(target), "--repo", str(repo))
    assert f"adapter {pickled} holds adapter_model.bin, pickled weights" in line
    assert "only safetensors adapters (adapter_model.safetensors) are exported" in line
    assert not target.exists()

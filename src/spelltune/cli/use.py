"""A trained adapter at work: `spelltune ask`, `chat`, `predict`, `outside`, `card` and `export`.

Every handler is wrapped by `_use`: it gets the adapter that --exp / --adapter (or the
workspace) names, closed afterwards; a bad input or an output that cannot be written is one
line on stderr and exit 2; Ctrl-C is one line and exit 130, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spelltune.cli.output import emit, os_error
from spelltune.errors import error

INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)


def _use(func=None, *, interrupted: str = "interrupted"):
    """Run a command on a trained adapter; a bad input is one line and exit 2; Ctrl-C, at
    any point (finding the adapter, importing torch, loading, generating), is the line
    `interrupted` and exit 130."""
    if func is None:
        return lambda f: _use(f, interrupted=interrupted)

    def wrapped(args) -> int:
        import signal

        from spelltune.experiments.adapters import UseError, resolve

        source = None
        try:
            source = resolve(args.repo, args.exp, args.adapter)
            return func(args, source)
        except UseError as exc:
            return error(exc)
        except OSError as exc:  # -o under a file, an unwritable directory, a full disk
            return error(os_error(exc))
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not break the cleanup
            # On a terminal the cursor is after the "^C" it echoed: the line of its own below.
            print(("\n" if sys.stderr.isatty() else "") + interrupted, file=sys.stderr, flush=True)
            return INTERRUPTED
        finally:
            if source is not None:
                source.close()

    return wrapped


def _positive(text: str) -> int:
    """argparse type: an integer >= 1 (argparse prints the one line and exits 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of 1 or more")
    return value


def _use_args(parser, batch: bool = False) -> None:
    """The options every use command shares: which adapter; with `batch`, how to run it."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--exp", help="an experiment's adapter (name from `dvc exp show`, or a git revision), read from the DVC cache"
    )
    which.add_argument("--adapter", help="an adapter directory (default: the workspace's checkpoints/adapter)")
    parser.add_argument(
        "--repo", default=".", help="the repository with data/base_model (default: the current directory)"
    )
    if batch:
        parser.add_argument("--batch-size", type=_positive, help="questions per batch (default: eval.batch_size)")
        parser.add_argument(
            "--threads", type=_positive,
            help="torch threads (default: torch's, one per core; 1 is faster on busy cores)"
        )


def _seconds_since_start() -> float:
    import time

    import psutil

    return time.time() - psutil.Process().create_time()


def _quiet_loading() -> None:
    """ask prints answers, not the loading and generation bars of its few questions."""
    import os
    import warnings

    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        from spelltune.modeling.base import set_threads

        set_threads(threads)


# ---------------------------------------------------------------------------- ask

def ask_args(parser) -> None:
    parser.description = (
        "Answers questions about the letters of one word: \"What is the 3rd letter of 'banana'?\", "
        "\"Spell 'banana' letter by letter.\" (in your own words too; a word of at most 40 letters). "
        "Any other question is refused in one line."
    )
    parser.add_argument("question", nargs="+", help="e.g. \"What is the 3rd letter of 'banana'?\"")
    parser.add_argument("--base", action="store_true", help="the base model's answer too, side by side")
    _use_args(parser, batch=True)


@_use
def cmd_ask(args, source) -> int:
    from spelltune.experiments.adapters import UseError
    from spelltune.experiments.use import item_for_question, load_tuned, out_of_scope

    # Every question checked before the model loads: a letter or spelling question about one
    # word of at most MAX_WORD_LETTERS letters (predict's limit), else one line and exit 2.
    items = [item_for_question(q, source.separator, "ask") for q in args.question]
    if not any(it["question"] for it in items):
        raise UseError("ask: the question is empty")
    other = next((it for it in items if it["task"] == "other"), None)
    if other is not None:
        raise UseError(f"ask: {out_of_scope(other['question'])}")
    _quiet_loading()
    _set_threads(args.threads)
    replies, base = load_tuned(source, args.base, items, args.batch_size or source.batch_size)
    for i, (item, reply) in enumerate(zip(items, replies)):
        if len(items) > 1:
            print(("\n" if i else "") + f"Q: {item['question']}")
        if base is not None:
            print(f"base:       {base[i] or '(empty reply)'}")
            print(f"fine-tuned: {reply or '(empty reply)'}")
        else:
            print(reply or "(empty reply)")
    print(f"({source.label}; {_seconds_since_start():.1f} s from the command's start)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- chat

QUIT = {"quit", "exit", ":q", ":quit", ":exit"}


def chat_args(parser) -> None:
    parser.description = (
        "ask, with the model loaded once: answers each question typed (or piped), one per line. "
        f"Leave with {', '.join(sorted(QUIT, key=len))}, Ctrl-D (end of input) or Ctrl-C."
    )
    _use_args(parser, batch=True)


@_use(interrupted="bye")
def cmd_chat(args, source) -> int:
    """ask's prompts and parsing, the model loaded once: one answer per line typed. A question
    that is not a letter or spelling one, or about a word too long, gets the one line that
    says so (on stdout, where its answer would be) and the chat goes on."""
    import time

    from spelltune.experiments.adapters import UseError
    from spelltune.experiments.use import item_for_question, out_of_scope, tuned_model, tuned_replies

    interactive = sys.stdin.isatty()
    if interactive:
        print(f"(loading {source.label}; Ctrl-C leaves)", file=sys.stderr, flush=True)
    _quiet_loading()
    _set_threads(args.threads)
    model, tokenizer = tuned_model(source)
    print(f"({source.label}, loaded in {_seconds_since_start():.1f} s; a question per line; "
          "quit, Ctrl-D or Ctrl-C leaves)", file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline()
        if not line:
            if interactive:
                print(file=sys.stderr)  # Ctrl-D: the shell's prompt on a line of its own
            return 0
        if not line.strip():
            continue
        if line.strip().lower() in QUIT:
            return 0
        start = time.perf_counter()
        try:
            item = item_for_question(line, source.separator, "chat")
        except UseError as exc:
            print(exc, flush=True)
            continue
        if item["task"] == "other":
            print(out_of_scope(line), flush=True)
            continue
        reply = tuned_replies(model, tokenizer, source, [item], 1)[0]
        print(reply or "(empty reply)", flush=True)
        print(f"({time.perf_counter() - start:.2f} s)", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- predict

def predict_args(parser) -> None:
    # experiments.use's MAX_WORD_LETTERS and CHUNK_BATCHES (not imported here: `spelltune --help`
    # stays light; tests/cli/test_use.py holds the two together).
    parser.description = (
        "Batch answers, one JSON line per question: the question, the reply, its parse and score, "
        "and `trained`: true where the word is one the adapter trained on (the words of data/train.jsonl "
        "of its workspace or experiment), false where not, \"unknown\" where that file is not at hand "
        "(an --adapter directory). Every input line is checked before the model loads (words of at most "
        "40 letters); then it is read, answered and written 16 batches of questions at a time, so a file "
        "of any size runs in bounded memory."
    )
    parser.add_argument(
        "input", help='one word per line (both kinds of question each), or JSON lines with "question" or "word"'
    )
    parser.add_argument("-o", "--out", default="-",
                        help="output JSON lines (default: stdout); never the input file, nor a link to it")
    _use_args(parser, batch=True)


@_use
def cmd_predict(args, source) -> int:
    from spelltune.experiments.use import (
        CHUNK_BATCHES,
        Tally,
        check_inputs,
        check_output,
        chunks,
        iter_inputs,
        mark_trained,
        output_stream,
        scored,
        trained_words,
        tuned_model,
        tuned_replies,
    )

    check_output(args.out, args.input)
    total = check_inputs(args.input, source.separator)  # a bad line refused before anything is written
    trained = trained_words(source)
    _set_threads(args.threads)
    model, tokenizer = tuned_model(source)
    tally = Tally()
    batch_size = args.batch_size or source.batch_size
    print(f"{total} questions from {args.input}", file=sys.stderr)
    with output_stream(args.out) as out:
        for chunk in chunks(iter_inputs(args.input, source.separator), CHUNK_BATCHES * batch_size):
            replies = tuned_replies(model, tokenizer, source, chunk, batch_size)
            for item, reply in zip(chunk, replies):
                row = mark_trained(scored(item, reply), trained)
                tally.add(row)
                out.write(json.dumps(row) + "\n")
            out.flush()
    print(f"{tally.summary()} ({source.label}) -> {args.out}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- outside

def outside_args(parser) -> None:
    parser.add_argument("--words", type=int, default=600, help="outside words to ask about (default: %(default)s)")
    parser.add_argument("--list", choices=["common", "wonderwords"], default="common",
                        help="common: the most frequent words of another frequency list; wonderwords: a sample of "
                             "its noun/verb/adjective lists (default: %(default)s)")
    parser.add_argument("--trained-too", action="store_true",
                        help="keep the list's training words too, as users meet them (scored apart as well)")
    parser.add_argument("--out", default="outside.json", help="result file (default: %(default)s)")
    _use_args(parser, batch=True)


@_use
def cmd_outside(args, source) -> int:
    from spelltune.experiments.outside import outside_items, summary
    from spelltune.experiments.use import load_tuned, scored, write_rows
    from spelltune.files import write_json
    from spelltune.params import load_or_exit

    items = outside_items(args.words, load_or_exit().data, source.separator, args.list, args.trained_too)
    _set_threads(args.threads)
    replies, _ = load_tuned(source, False, items, args.batch_size or source.batch_size)
    rows = [scored(it, r) for it, r in zip(items, replies)]
    result = summary(rows, source.label, args.list)
    write_json(result, Path(args.out))
    write_rows(rows, str(Path(args.out).with_suffix(".jsonl")))
    for name in ("letter_position_accuracy", "spelling_exact_match", "char_error_rate"):
        m = result[name]
        print(f"outside/{name}: {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] (n={m['n']})")
    for group, found in [*((f"{g} wording", result["groups"].get(g, {})) for g in ("canonical", "held_out")),
                         *((f"{k} words", v) for k, v in result.get("by_training", {}).items())]:
        print(f"  {group}: " + ", ".join(
            f"{name} {m['value']:.3f} (n={m['n']})" for name, m in found.items() if name != "char_error_rate"))
    print(f"wrote {args.out} and the answers beside it ({Path(args.out).with_suffix('.jsonl')})", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- card

def card_args(parser) -> None:
    parser.add_argument("-o", "--out", help="write it here (default: print it)")
    _use_args(parser)


@_use
def cmd_card(args, source) -> int:
    from spelltune.experiments.export import full_card

    text = full_card(source)
    return emit(text, args.out)


# ---------------------------------------------------------------------------- export

def export_args(parser) -> None:
    parser.add_argument(
        "--merged", metavar="DIR", help="LoRA merged into the base weights: plain transformers loads it"
    )
    parser.add_argument("--peft", metavar="DIR", help="the adapter's files with the full model card")
    parser.add_argument("--gguf", metavar="FILE", help="the merged model as a GGUF file (llama.cpp), f32")
    _use_args(parser)


def export_refusal(args) -> str | None:
    """No target at all: a usage error, before the adapter is looked for (argparse cannot require one of three)."""
    if not (args.merged or args.peft or args.gguf):
        return "export: give --merged DIR, --peft DIR and/or --gguf FILE"
    return None


@_use
def cmd_export(args, source) -> int:
    from spelltune.experiments import export

    export.check_export_targets(args.peft, args.merged, args.gguf)
    if args.peft:
        export.check_safetensors_only(source)  # before anything is written
    if args.peft:
        export.export_peft(source, Path(args.peft))
        print(f"adapter and model card written to {args.peft}", file=sys.stderr)
    if args.merged:
        export.export_merged(source, Path(args.merged))
        print(
            f"merged model written to {args.merged} (loads with AutoModelForCausalLM.from_pretrained)", file=sys.stderr
        )
    if args.gguf:
        export.export_gguf(source, Path(args.gguf), Path(args.merged) if args.merged else None)
        print(f"GGUF written to {args.gguf}", file=sys.stderr)
    return 0

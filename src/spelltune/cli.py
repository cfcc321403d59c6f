"""The `spelltune` command: what DVC itself does not do.

    spelltune check [params.yaml]     validate params against the schema
    spelltune tiny-model DIR          write a tiny random model with SmolLM2's tokenizer
    spelltune compare                 leaderboard, plots, importance, next configs -> compare/
    spelltune significance [A] [B]    is A better than B, or noise? (B may be `base`)
    spelltune recommend               next configs as `dvc exp run --queue -S ...` lines
    spelltune errors [EXP]            where one experiment's model fails
    spelltune outside                 the trained adapter on common English words from outside this repository
    spelltune sweep plan|run [sweep.yaml]   grid / random / Bayesian search, every trial a DVC experiment
    spelltune ask "QUESTION" [--base]  answer with the trained adapter (workspace, --exp NAME or --adapter DIR)
    spelltune chat                     the same, the model loaded once: a question per line typed, Ctrl-D ends
    spelltune predict FILE -o OUT      batch answers for a words file or questions.jsonl
    spelltune card [-o FILE]          the model card with evaluate's metrics
    spelltune export --merged DIR | --peft DIR | --gguf FILE   share the model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spelltune.errors import error


def cmd_check(args) -> int:
    from spelltune.modeling.backends import BackendError
    from spelltune.params import ParamsError
    from spelltune.training.preflight import check

    try:
        check(args.params)  # the validate stage's own checks
    except (ParamsError, BackendError) as exc:
        return error(exc)
    print(f"{args.params}: valid")
    return 0


def cmd_tiny_model(args) -> int:
    from spelltune.modeling.base import make_tiny_model

    make_tiny_model(Path(args.out), seed=args.seed)
    print(f"tiny model written to {args.out}; use it with: dvc exp run -S model.source={args.out}")
    return 0


def _comparison(func):
    """Run a comparison command; a bad experiment name or metric is one line and exit 2."""

    def wrapped(args) -> int:
        from spelltune.experiments.runs import CompareError

        try:
            return func(args)
        except CompareError as exc:
            return error(exc)
        except OSError as exc:  # --out under a file, an unwritable directory, a full disk
            return error(_os_error(exc))

    return wrapped


def _os_error(exc: OSError) -> str:
    """An OSError as one line: the path and what went wrong there."""
    where = exc.filename or ""
    return f"{where}: {exc.strerror or exc}" if where else str(exc.strerror or exc)


def _runs_and_metric(args, named: list[str] | None = None):
    """The experiments to compare (--exp/--where, or `named` on the command line) and the
    metric; experiments of different eval sets or base models are refused, not ranked."""
    from spelltune.experiments.runs import DEFAULT_METRIC, comparable, load_runs, select

    runs = load_runs(args.repo, all_commits=args.all_commits, rev=args.rev)
    if runs.table.empty:
        from spelltune.experiments.runs import CompareError

        raise CompareError(f"no finished experiments in {runs.repo}: run `dvc exp run` first")
    runs = comparable(select(runs, [*(args.exp or []), *(named or [])], args.where))
    metric = runs.resolve_metric(args.metric or DEFAULT_METRIC)
    if args.metric and metric.split(":", 1)[-1].startswith("test/"):
        print(f"warning: choosing by {args.metric} uses the test split; the test number of what you choose "
              "is then optimistic. Choose on val/ and read test/ once per finished recipe.", file=sys.stderr)
    return runs, metric


@_comparison
def cmd_compare(args) -> int:
    from spelltune.experiments.html_report import write_report
    from spelltune.experiments.leaderboard import leaderboard
    from spelltune.experiments.recommend import recommend

    runs, metric = _runs_and_metric(args)
    paths = write_report(runs, metric, args.ascending, args.out)
    print(leaderboard(runs, metric, args.ascending).to_markdown(index=False, floatfmt=".4g"))
    print("\n".join(["", *recommend(runs, metric, args.ascending), ""]))
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0


@_comparison
def cmd_significance(args) -> int:
    from spelltune.experiments.significance import BASE, compare_two, default_comparisons, seed_groups, split_and_task

    runs, metric = _runs_and_metric(args, [n for n in (args.a, args.b) if n and n != BASE])
    split_and_task(metric)  # an accuracy metric, or one line saying which are allowed
    if args.a and args.b:
        results = [compare_two(runs, args.a, args.b, metric)]
    elif args.a:
        results = [compare_two(runs, args.a, BASE, metric)]
    else:
        results = default_comparisons(runs, metric, args.ascending)
    for result in results:
        print(result.sentence())
    seeds = seed_groups(runs, metric)
    if seeds is not None:
        print("\nSame config, different seeds (mean ± 95% CI, t-interval):")
        print(seeds.to_markdown(index=False, floatfmt=".4g"))
    return 0


@_comparison
def cmd_recommend(args) -> int:
    from spelltune.experiments.recommend import recommend

    runs, metric = _runs_and_metric(args)
    print("\n".join(recommend(runs, metric, args.ascending, limit=args.limit)))
    return 0


@_comparison
def cmd_errors(args) -> int:
    from spelltune.experiments.error_analysis import error_analysis, errors_markdown
    from spelltune.experiments.leaderboard import ranked
    from spelltune.experiments.significance import predictions

    runs, metric = _runs_and_metric(args, [args.experiment] if args.experiment else None)
    name = runs.resolve(args.experiment) if args.experiment else ranked(runs, metric, args.ascending).index[0]
    text = errors_markdown(name, error_analysis(predictions(runs, name), args.split, args.top), args.split)
    return _emit(text, args.out)


def _emit(text: str, out: str | None) -> int:
    """Markdown to --out, or to stdout."""
    if out:
        Path(out).write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(text)
    return 0


def _use(func):
    """Run a command on a trained adapter; a bad input is one line and exit 2."""

    def wrapped(args) -> int:
        from spelltune.experiments.adapters import UseError, resolve

        source = None
        try:
            source = resolve(args.repo, args.exp, args.adapter)
            return func(args, source)
        except UseError as exc:
            return error(exc)
        except OSError as exc:  # -o under a file, an unwritable directory, a full disk
            return error(_os_error(exc))
        finally:
            if source is not None:
                source.close()

    return wrapped


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


@_use
def cmd_ask(args, source) -> int:
    from spelltune.experiments.use import item_for_question, load_tuned

    _quiet_loading()
    items = [item_for_question(q, source.separator) for q in args.question]
    if not any(it["question"] for it in items):
        from spelltune.experiments.adapters import UseError

        raise UseError("ask: the question is empty")
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


@_use
def cmd_chat(args, source) -> int:
    """ask's prompts and parsing, the model loaded once: one answer per line typed."""
    import time

    from spelltune.experiments.use import item_for_question, tuned_model, tuned_replies

    _quiet_loading()
    _set_threads(args.threads)
    model, tokenizer = tuned_model(source)
    interactive = sys.stdin.isatty()
    print(f"({source.label}, loaded in {_seconds_since_start():.1f} s; a question per line, Ctrl-D ends)",
          file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline()
        if not line:
            return 0
        if not line.strip():
            continue
        start = time.perf_counter()
        reply = tuned_replies(model, tokenizer, source, [item_for_question(line, source.separator)], 1)[0]
        print(reply or "(empty reply)", flush=True)
        print(f"({time.perf_counter() - start:.2f} s)", file=sys.stderr, flush=True)


@_use
def cmd_predict(args, source) -> int:
    from spelltune.experiments.use import check_output, load_tuned, progress_summary, read_inputs, scored, write_rows

    check_output(args.out, args.input)
    items = read_inputs(args.input, source.separator)
    _set_threads(args.threads)
    replies, _ = load_tuned(source, False, items, args.batch_size or source.batch_size)
    rows = [scored(it, r) for it, r in zip(items, replies)]
    write_rows(rows, args.out)
    print(f"{progress_summary(rows)} ({source.label}) -> {args.out}", file=sys.stderr)
    return 0


@_use
def cmd_outside(args, source) -> int:
    from spelltune.experiments.outside import outside_items, summary
    from spelltune.experiments.use import load_tuned, scored, write_rows
    from spelltune.files import write_json
    from spelltune.params import load_or_exit

    items = outside_items(args.words, load_or_exit().data, source.separator, args.list)
    _set_threads(args.threads)
    replies, _ = load_tuned(source, False, items, args.batch_size or source.batch_size)
    rows = [scored(it, r) for it, r in zip(items, replies)]
    result = summary(rows, source.label, args.list)
    write_json(result, Path(args.out))
    write_rows(rows, str(Path(args.out).with_suffix(".jsonl")))
    for name in ("letter_position_accuracy", "spelling_exact_match", "char_error_rate"):
        m = result[name]
        print(f"outside/{name}: {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] (n={m['n']})")
    for group in ("canonical", "held_out"):
        found = result["groups"].get(group, {})
        print(f"  {group} wording: " + ", ".join(
            f"{name} {m['value']:.3f} (n={m['n']})" for name, m in found.items() if name != "char_error_rate"))
    print(f"wrote {args.out} and the answers beside it ({Path(args.out).with_suffix('.jsonl')})", file=sys.stderr)
    return 0


@_use
def cmd_card(args, source) -> int:
    from spelltune.experiments.export import full_card

    text = full_card(source)
    return _emit(text, args.out)


@_use
def cmd_export(args, source) -> int:
    from spelltune.experiments import export

    export.check_export_targets(args.peft, args.merged, args.gguf)
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


def _comparison_args(parser) -> None:
    from spelltune.experiments.runs import DEFAULT_METRIC

    parser.add_argument("--metric", help="rank by this metric: `val/letter_position_accuracy` or `file:key` of "
                        "metrics/eval.json, base.json, train.json (docs/compare.md) "
                        f"(default: {DEFAULT_METRIC}; a test/ metric warns: validation chooses)")
    parser.add_argument("--ascending", action=argparse.BooleanOptionalAction, default=None,
                        help="lower is better (default: only for losses, error rates and times)")
    parser.add_argument("--repo", default=".", help="the repository (default: the current directory)")
    parser.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    parser.add_argument(
        "--rev", help="experiments of this commit instead of HEAD's (one whose experiments ran before later commits)"
    )
    parser.add_argument("--exp", action="append", metavar="NAME",
                        help="only this experiment (repeat for more; names, revisions or `workspace`)")
    parser.add_argument("--where", action="append", metavar="KEY=VALUE",
                        help="only experiments whose param has this value, e.g. model.source=embedded or "
                             "eval_set=1a2b3c4d (repeat: all must hold). Experiments of different eval sets "
                             "or base models are never ranked together")


@_comparison
def cmd_dashboard(args) -> int:
    from spelltune.experiments.dashboard import serve
    from spelltune.sweeps.bayes import default_storages
    from spelltune.training.pruning import open_storage

    repo = Path(args.repo).resolve()
    storages = {url: open_storage(url) for url in [*default_storages(repo), *(args.storage or [])]}
    serve(repo, storages, args.host, args.port, args.every, args.metric, "minimize" if args.ascending else "maximize")
    return 0


def _add_comparison_commands(sub) -> None:
    from spelltune.experiments.runs import DEFAULT_METRIC

    dashboard = sub.add_parser("dashboard", help="every sweep and experiment, live, in optuna-dashboard")
    dashboard.add_argument("--repo", default=".", help="the repository (default: the current directory)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default: %(default)s; 0: any free one)")
    dashboard.add_argument("--every", type=float, default=5.0, help="seconds between refreshes (default: %(default)s)")
    dashboard.add_argument("--metric", default=DEFAULT_METRIC,
                           help="the trials' value, with its in-training curve (default: %(default)s)")
    dashboard.add_argument("--ascending", action="store_true", help="lower is better")
    dashboard.add_argument("--storage", action="append", metavar="URL",
                           help="another Bayesian sweep's storage (a database URL or journal file; repeat), "
                                "besides the journals under .spelltune/sweeps/")
    dashboard.set_defaults(func=cmd_dashboard)
    compare = sub.add_parser("compare", help="leaderboard, plots, importance and next configs over all experiments")
    _comparison_args(compare)
    compare.add_argument("--out", default="compare", help="output directory (default: %(default)s)")
    compare.set_defaults(func=cmd_compare)
    significance = sub.add_parser("significance", help="paired test of two experiments on the same items")
    significance.add_argument("a", nargs="?", help="experiment (default: the best)")
    significance.add_argument(
        "b", nargs="?", help="experiment or `base` (default: runner-up and base model; with A alone: base)"
    )
    _comparison_args(significance)
    significance.set_defaults(func=cmd_significance)
    recommend = sub.add_parser("recommend", help="next configs to try, as `dvc exp run --queue -S ...` lines")
    _comparison_args(recommend)
    recommend.add_argument("--limit", type=int, default=8, help="at most this many configs (default: %(default)s)")
    recommend.set_defaults(func=cmd_recommend)
    errors = sub.add_parser("errors", help="error analysis of one experiment (default: the best)")
    errors.add_argument("experiment", nargs="?")
    _comparison_args(errors)
    errors.add_argument("--split", default="validation", choices=["test", "validation", "all"])
    errors.add_argument("--top", type=int, default=10, help="rows of confusions and worst words (default: %(default)s)")
    errors.add_argument("--out", help="write the Markdown here instead of printing it")
    errors.set_defaults(func=cmd_errors)


def _add_use_commands(sub) -> None:
    outside = sub.add_parser(
        "outside", help="score a trained adapter on common English words from outside this repository"
    )
    outside.add_argument("--words", type=int, default=600, help="outside words to ask about (default: %(default)s)")
    outside.add_argument("--list", choices=["common", "wonderwords"], default="common",
                         help="common: the most frequent words of another frequency list; wonderwords: a sample of "
                              "its noun/verb/adjective lists (default: %(default)s)")
    outside.add_argument("--out", default="outside.json", help="result file (default: %(default)s)")
    _use_args(outside, batch=True)
    outside.set_defaults(func=cmd_outside)
    ask = sub.add_parser("ask", help="answer questions with the trained adapter")
    ask.add_argument("question", nargs="+", help="e.g. \"What is the 3rd letter of 'banana'?\"")
    ask.add_argument("--base", action="store_true", help="the base model's answer too, side by side")
    _use_args(ask, batch=True)
    ask.set_defaults(func=cmd_ask)
    chat = sub.add_parser("chat", help="ask, with the model loaded once: answers each question typed (or piped)")
    _use_args(chat, batch=True)
    chat.set_defaults(func=cmd_chat)
    predict = sub.add_parser("predict", help="batch answers for a words file or a questions.jsonl file")
    predict.add_argument(
        "input", help='one word per line (both kinds of question each), or JSON lines with "question" or "word"'
    )
    predict.add_argument("-o", "--out", default="-", help="output JSON lines (default: stdout)")
    _use_args(predict, batch=True)
    predict.set_defaults(func=cmd_predict)
    card = sub.add_parser("card", help="the model card with evaluate's metrics and their intervals")
    card.add_argument("-o", "--out", help="write it here (default: print it)")
    _use_args(card)
    card.set_defaults(func=cmd_card)
    export = sub.add_parser("export", help="the adapter with its card, merged safetensors, or GGUF")
    export.add_argument(
        "--merged", metavar="DIR", help="LoRA merged into the base weights: plain transformers loads it"
    )
    export.add_argument("--peft", metavar="DIR", help="the adapter's files with the full model card")
    export.add_argument("--gguf", metavar="FILE", help="the merged model as a GGUF file (llama.cpp), f32")
    _use_args(export)
    export.set_defaults(func=cmd_export)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="spelltune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate params.yaml")
    check.add_argument("params", nargs="?", default="params.yaml")
    check.set_defaults(func=cmd_check)
    tiny = sub.add_parser("tiny-model", help="write a tiny random model (tests, smoke runs)")
    tiny.add_argument("out")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_tiny_model)
    _add_comparison_commands(sub)
    _add_use_commands(sub)
    from spelltune.sweeps.commands import add_parser as add_sweep_parser

    add_sweep_parser(sub)
    # `spelltune sweep wandb-agent` takes W&B's --key=value arguments as they come.
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "wants_rest", False):
        return args.func(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "export" and not (args.merged or args.peft or args.gguf):
        parser.error("export: give --merged DIR, --peft DIR and/or --gguf FILE")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The `spelltune` command: what DVC itself does not do.

    spelltune check [params.yaml]     validate params against the schema
    spelltune tiny-model DIR          write a tiny random model with SmolLM2's tokenizer
    spelltune compare                 leaderboard, plots, importance, next configs -> compare/
    spelltune significance [A] [B]    is A better than B, or noise? (B may be `base`)
    spelltune recommend               next configs as `dvc exp run --queue -S ...` lines
    spelltune errors [EXP]            where one experiment's model fails
    spelltune outside                 the trained adapter on common English words from outside this repository
    spelltune sweep plan|run [sweep.yaml]   grid / random / Bayesian search, every trial a DVC experiment
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_check(args) -> int:
    from spelltune.backend import BackendError, check_machine, machine_needs_checking
    from spelltune.params import ParamsError, load

    try:
        params = load(args.params)
        if machine_needs_checking(params):  # e.g. 4-bit or bf16: this machine needs CUDA
            check_machine(params, import_unsloth=False)
    except (ParamsError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.params}: valid")
    return 0


def cmd_tiny_model(args) -> int:
    from spelltune.model import make_tiny_model

    make_tiny_model(Path(args.out), seed=args.seed)
    print(f"tiny model written to {args.out}; use it with: dvc exp run -S model.source={args.out}")
    return 0


def cmd_outside(args) -> int:
    from spelltune.outside import check
    from spelltune.params import load_or_exit

    if not (Path(args.adapter) / "adapter_config.json").exists():
        print(f"error: --adapter {args.adapter}: no adapter_config.json there (run `dvc exp run` first)", file=sys.stderr)
        return 2
    result = check(Path(args.adapter), args.words, load_or_exit(), Path(args.out))
    for name in ("letter_position_accuracy", "spelling_exact_match", "char_error_rate"):
        m = result[name]
        print(f"outside/{name}: {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] (n={m['n']})")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _comparison(func):
    """Run a comparison command; a bad experiment name or metric is one line and exit 2."""

    def wrapped(args) -> int:
        from spelltune.compare import CompareError

        try:
            return func(args)
        except CompareError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapped


def _runs_and_metric(args):
    from spelltune.compare import DEFAULT_METRIC, load_runs

    runs = load_runs(args.repo, all_commits=args.all_commits, rev=args.rev)
    metric = runs.resolve_metric(args.metric or DEFAULT_METRIC)
    if args.metric and metric.split(":", 1)[-1].startswith("test/"):
        print(f"warning: choosing by {args.metric} uses the test split; the test number of what you choose "
              "is then optimistic. Choose on val/ and read test/ once per finished recipe.", file=sys.stderr)
    if runs.table.empty:
        from spelltune.compare import CompareError

        raise CompareError(f"no finished experiments in {runs.repo}: run `dvc exp run` first")
    return runs, metric


@_comparison
def cmd_compare(args) -> int:
    from spelltune.compare import leaderboard, recommend, write_report

    runs, metric = _runs_and_metric(args)
    paths = write_report(runs, metric, args.ascending, args.out)
    print(leaderboard(runs, metric, args.ascending).to_markdown(index=False, floatfmt=".4g"))
    print("\n".join(["", *recommend(runs, metric, args.ascending), ""]))
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0


@_comparison
def cmd_significance(args) -> int:
    from spelltune.analysis import BASE, compare_two, default_comparisons, seed_groups, split_and_task

    runs, metric = _runs_and_metric(args)
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
    from spelltune.compare import recommend

    runs, metric = _runs_and_metric(args)
    print("\n".join(recommend(runs, metric, args.ascending, limit=args.limit)))
    return 0


@_comparison
def cmd_errors(args) -> int:
    from spelltune.analysis import error_analysis, errors_markdown, predictions
    from spelltune.compare import ranked

    runs, metric = _runs_and_metric(args)
    name = runs.resolve(args.experiment) if args.experiment else ranked(runs, metric, args.ascending).index[0]
    text = errors_markdown(name, error_analysis(predictions(runs, name), args.split, args.top), args.split)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


def _comparison_args(parser) -> None:
    from spelltune.compare import DEFAULT_METRIC

    parser.add_argument("--metric", help="rank by this metric: `val/letter_position_accuracy` or `file:key` as in "
                        f"`dvc exp show` (default: {DEFAULT_METRIC}; a test/ metric warns: validation chooses)")
    parser.add_argument("--ascending", action=argparse.BooleanOptionalAction, default=None,
                        help="lower is better (default: only for losses, error rates and times)")
    parser.add_argument("--repo", default=".", help="the repository (default: the current directory)")
    parser.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    parser.add_argument("--rev", help="experiments of this commit instead of HEAD's (one whose experiments ran before later commits)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="spelltune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate params.yaml")
    check.add_argument("params", nargs="?", default="params.yaml")
    check.set_defaults(func=cmd_check)
    tiny = sub.add_parser("tiny-model", help="write a tiny random model (tests, smoke runs)")
    tiny.add_argument("out")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_tiny_model)
    compare = sub.add_parser("compare", help="leaderboard, plots, importance and next configs over all experiments")
    _comparison_args(compare)
    compare.add_argument("--out", default="compare", help="output directory (default: %(default)s)")
    compare.set_defaults(func=cmd_compare)
    significance = sub.add_parser("significance", help="paired test of two experiments on the same items")
    significance.add_argument("a", nargs="?", help="experiment (default: the best)")
    significance.add_argument("b", nargs="?", help="experiment or `base` (default: runner-up and base model; with A alone: base)")
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
    outside = sub.add_parser("outside", help="score a trained adapter on common English words from outside this repository")
    outside.add_argument("--adapter", default="checkpoints/adapter", help="adapter directory (default: %(default)s)")
    outside.add_argument("--words", type=int, default=600, help="outside words to ask about (default: %(default)s)")
    outside.add_argument("--out", default="metrics/outside.json", help="result file (default: %(default)s)")
    outside.set_defaults(func=cmd_outside)
    from spelltune.sweep import add_parser as add_sweep_parser

    add_sweep_parser(sub)
    # `spelltune sweep wandb-agent` takes W&B's --key=value arguments as they come.
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "wants_rest", False):
        return args.func(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

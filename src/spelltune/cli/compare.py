"""Across experiments: `spelltune compare`, `significance`, `recommend`, `errors` and `dashboard`.

Every handler is wrapped by `_comparison`: a bad experiment name or metric, or an output that
cannot be written, is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spelltune.cli.output import emit, os_error
from spelltune.errors import error


def _comparison(func):
    """Run a comparison command; a bad experiment name or metric is one line and exit 2."""

    def wrapped(args) -> int:
        from spelltune.experiments.runs import CompareError

        try:
            return func(args)
        except CompareError as exc:
            return error(exc)
        except OSError as exc:  # --out under a file, an unwritable directory, a full disk
            return error(os_error(exc))

    return wrapped


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


def _comparison_args(parser) -> None:
    """The options every comparison command shares: which experiments, ranked by what."""
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


# ---------------------------------------------------------------------------- compare

def compare_args(parser) -> None:
    _comparison_args(parser)
    parser.add_argument("--out", default="compare", help="output directory (default: %(default)s)")


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


# ---------------------------------------------------------------------------- significance

def significance_args(parser) -> None:
    parser.add_argument("a", nargs="?", help="experiment (default: the best)")
    parser.add_argument(
        "b", nargs="?", help="experiment or `base` (default: runner-up and base model; with A alone: base)"
    )
    _comparison_args(parser)


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


# ---------------------------------------------------------------------------- recommend

def recommend_args(parser) -> None:
    _comparison_args(parser)
    parser.add_argument("--limit", type=int, default=8, help="at most this many configs (default: %(default)s)")


@_comparison
def cmd_recommend(args) -> int:
    from spelltune.experiments.recommend import recommend

    runs, metric = _runs_and_metric(args)
    print("\n".join(recommend(runs, metric, args.ascending, limit=args.limit)))
    return 0


# ---------------------------------------------------------------------------- errors

def errors_args(parser) -> None:
    parser.add_argument("experiment", nargs="?", help="the experiment to analyse (default: the best by --metric)")
    _comparison_args(parser)
    parser.add_argument("--split", default="validation", choices=["test", "validation", "all"],
                        help="whose answers to analyse (default: %(default)s; test only once you have chosen)")
    parser.add_argument("--top", type=int, default=10, help="rows of confusions and worst words (default: %(default)s)")
    parser.add_argument("--out", help="write the Markdown here instead of printing it")


@_comparison
def cmd_errors(args) -> int:
    from spelltune.experiments.error_analysis import error_analysis, errors_markdown
    from spelltune.experiments.leaderboard import ranked
    from spelltune.experiments.significance import predictions

    runs, metric = _runs_and_metric(args, [args.experiment] if args.experiment else None)
    name = runs.resolve(args.experiment) if args.experiment else ranked(runs, metric, args.ascending).index[0]
    text = errors_markdown(name, error_analysis(predictions(runs, name), args.split, args.top), args.split)
    return emit(text, args.out)


# ---------------------------------------------------------------------------- dashboard

def dashboard_args(parser) -> None:
    from spelltune.experiments.runs import DEFAULT_METRIC

    parser.add_argument("--repo", default=".", help="the repository (default: the current directory)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: %(default)s; 0: any free one)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between refreshes (default: %(default)s)")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help="the trials' value, with its in-training curve (default: %(default)s)")
    parser.add_argument("--ascending", action="store_true", help="lower is better")
    parser.add_argument("--storage", action="append", metavar="URL",
                        help="another Bayesian sweep's storage (a database URL or journal file; repeat), "
                             "besides the journals under .spelltune/sweeps/")


@_comparison
def cmd_dashboard(args) -> int:
    from spelltune.experiments.dashboard import serve
    from spelltune.sweeps.study import default_storages
    from spelltune.training.pruning import open_storage

    repo = Path(args.repo).resolve()
    storages = {url: open_storage(url) for url in [*default_storages(repo), *(args.storage or [])]}
    serve(repo, storages, args.host, args.port, args.every, args.metric, "minimize" if args.ascending else "maximize")
    return 0

"""`spelltune check` and `spelltune tiny-model`: before a run, the params and a model to smoke-test with."""

from __future__ import annotations

from pathlib import Path

from spelltune.errors import error


def check_args(parser) -> None:
    parser.add_argument("params", nargs="?", default="params.yaml",
                        help="the params file to check (default: %(default)s)")


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


def tiny_model_args(parser) -> None:
    parser.add_argument("out", help="the directory to write the tiny model to (a new or empty one)")
    parser.add_argument("--seed", type=int, default=0, help="its random init (default: %(default)s)")


def cmd_tiny_model(args) -> int:
    from spelltune.modeling.base import make_tiny_model

    make_tiny_model(Path(args.out), seed=args.seed)
    print(f"tiny model written to {args.out}; use it with: dvc exp run -S model.source={args.out}")
    return 0

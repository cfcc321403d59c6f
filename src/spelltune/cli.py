"""The `spelltune` command: what DVC itself does not do.

    spelltune check [params.yaml]     validate params against the schema
    spelltune tiny-model DIR          write a tiny random model with SmolLM2's tokenizer
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_check(args) -> int:
    from spelltune.params import ParamsError, load

    try:
        load(args.params)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.params}: valid")
    return 0


def cmd_tiny_model(args) -> int:
    from spelltune.model import make_tiny_model

    make_tiny_model(Path(args.out), seed=args.seed)
    print(f"tiny model written to {args.out}; use it with: dvc exp run -S model.source={args.out}")
    return 0


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
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

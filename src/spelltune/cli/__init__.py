"""The `spelltune` command: what DVC itself does not do.

    spelltune check [params.yaml]     validate params against the schema
    spelltune tiny-model DIR          write a tiny random model with SmolLM2's tokenizer
    spelltune dashboard               every sweep and experiment, live, in optuna-dashboard
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

# This docstring is `spelltune --help`'s description; the commands are the table below, their
# arguments and handlers in check.py (before a run), compare.py (across experiments) and use.py
# (a trained adapter), `sweep` in spelltune/sweeps/commands.py.

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from spelltune.cli import check, compare, use


@dataclass(frozen=True)
class Command:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]  # adds the command's arguments to its parser
    run: Callable[[argparse.Namespace], int]  # the handler: parsed arguments in, exit code out
    refuse: Callable[[argparse.Namespace], str | None] | None = None  # a usage error argparse cannot express


# In `spelltune --help`'s order.
COMMANDS: dict[str, Command] = {
    "check": Command("validate params.yaml", check.check_args, check.cmd_check),
    "tiny-model": Command("write a tiny random model (tests, smoke runs)", check.tiny_model_args, check.cmd_tiny_model),
    "dashboard": Command("every sweep and experiment, live, in optuna-dashboard",
                         compare.dashboard_args, compare.cmd_dashboard),
    "compare": Command("leaderboard, plots, importance and next configs over all experiments",
                       compare.compare_args, compare.cmd_compare),
    "significance": Command("paired test of two experiments on the same items",
                            compare.significance_args, compare.cmd_significance),
    "recommend": Command("next configs to try, as `dvc exp run --queue -S ...` lines",
                         compare.recommend_args, compare.cmd_recommend),
    "errors": Command("error analysis of one experiment (default: the best)", compare.errors_args, compare.cmd_errors),
    "outside": Command("score a trained adapter on common English words from outside this repository",
                       use.outside_args, use.cmd_outside),
    "ask": Command("answer questions with the trained adapter", use.ask_args, use.cmd_ask),
    "chat": Command("ask, with the model loaded once: answers each question typed (or piped)",
                    use.chat_args, use.cmd_chat),
    "predict": Command("batch answers for a words file or a questions.jsonl file", use.predict_args, use.cmd_predict),
    "card": Command("the model card with evaluate's metrics and their intervals", use.card_args, use.cmd_card),
    "export": Command("the adapter with its card, merged safetensors, or GGUF",
                      use.export_args, use.cmd_export, refuse=use.export_refusal),
}
# Last: `spelltune sweep plan|run|wandb-agent`, a parser with a description and subcommands of
# its own, built by spelltune.sweeps.commands.add_parser.


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="spelltune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = top.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        parser = sub.add_parser(name, help=command.help)
        command.arguments(parser)
        parser.set_defaults(func=command.run)
    from spelltune.sweeps.commands import add_parser as add_sweep_parser

    add_sweep_parser(sub)
    return top


def main(argv=None) -> int:
    top = build_parser()
    # `spelltune sweep wandb-agent` takes W&B's --key=value arguments as they come.
    args, rest = top.parse_known_args(argv)
    if getattr(args, "wants_rest", False):
        return args.func(args, rest)
    if rest:
        top.error(f"unrecognized arguments: {' '.join(rest)}")
    command = COMMANDS.get(args.command)
    if command and command.refuse and (problem := command.refuse(args)):
        top.error(problem)
    return args.func(args)

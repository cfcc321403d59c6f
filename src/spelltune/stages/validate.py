"""Stage `validate`: check params.yaml against the schema before any other stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so a bad value caught
inside `train` would already have cost the previous checkpoints. This stage comes first
in the DAG (every stage depends on its marker file, whose content never changes), so a
bad params.yaml stops `dvc exp run` before anything is touched. That includes values this
machine cannot run (spelltune.modeling.backends), e.g. model.load_in_4bit on a CPU, params that
name things outside the repository (model.source), which are looked up here without the
network, and split sizes the word list cannot fill. `spelltune check` runs the same `check`.
"""

from __future__ import annotations

from pathlib import Path

from spelltune.errors import fail
from spelltune.params import PARAMS_FILE, Params, ParamsError, load
from spelltune.paths import PARAMS_OK


def check(path: str | Path = PARAMS_FILE) -> Params:
    """Every check of this stage; raises ParamsError or BackendError with the line to show."""
    from spelltune.modeling.backends import check_machine, machine_needs_checking
    from spelltune.modeling.sources import source_problem
    from spelltune.task.questions import ranked_words, split_words

    params = load(path)
    why = source_problem(params.model.source)
    if why:
        raise ParamsError(f"{path}: model.source = {params.model.source!r}: {why}")
    data = params.data
    try:
        split_words(ranked_words(data.min_word_length, data.max_word_length), data)
    except ValueError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    # What only this machine can answer (CUDA for 4-bit, bf16 or model.backend = unsloth);
    # the default params run anywhere and skip it (no torch import).
    if machine_needs_checking(params):
        check_machine(params, import_unsloth=False)
    return params


def main() -> None:
    from spelltune.modeling.backends import BackendError

    try:
        check()
    except (ParamsError, BackendError) as exc:
        fail(exc)
    PARAMS_OK.parent.mkdir(parents=True, exist_ok=True)
    PARAMS_OK.write_text("params.yaml is valid\n")


if __name__ == "__main__":
    main()

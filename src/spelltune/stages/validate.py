"""Stage `validate`: check params.yaml against the schema before any other stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so a bad value caught
inside `train` would already have cost the previous checkpoints. This stage comes first
in the DAG (every stage depends on its marker file, whose content never changes), so a
bad params.yaml stops `dvc exp run` before anything is touched. That includes values this
machine cannot run (spelltune.modeling.backends), e.g. model.load_in_4bit on a CPU, and params that
name things outside the repository (model.source), which are looked up here without the
network.
"""

from __future__ import annotations

from spelltune.errors import fail
from spelltune.modeling.sources import source_problem
from spelltune.params import PARAMS_FILE, load_or_exit
from spelltune.paths import PARAMS_OK


def main() -> None:
    params = load_or_exit()
    why = source_problem(params.model.source)
    if why:
        fail(f"{PARAMS_FILE}: model.source = {params.model.source!r}: {why}")
    # What only this machine can answer (CUDA for 4-bit, bf16 or model.backend = unsloth);
    # the default params run anywhere and skip it (no torch import).
    from spelltune.modeling.backends import check_or_exit, machine_needs_checking

    if machine_needs_checking(params):
        check_or_exit(params, import_unsloth=False)
    PARAMS_OK.parent.mkdir(parents=True, exist_ok=True)
    PARAMS_OK.write_text("params.yaml is valid\n")


if __name__ == "__main__":
    main()

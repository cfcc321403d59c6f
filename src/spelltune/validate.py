"""Stage `validate`: check params.yaml against the schema before any other stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so a bad value caught
inside `train` would already have cost the previous checkpoints. This stage comes first
in the DAG (every stage depends on its marker file, whose content never changes), so a
bad params.yaml stops `dvc exp run` before anything is touched. That includes values this
machine cannot run (spelltune.backend), e.g. model.load_in_4bit on a CPU.
"""

from pathlib import Path

from spelltune.params import load_or_exit

MARKER = Path("data/params.ok")


def main() -> None:
    params = load_or_exit()
    # What only this machine can answer (CUDA for 4-bit, bf16 or model.backend = unsloth);
    # the default params run anywhere and skip it (no torch import).
    from spelltune.backend import check_or_exit, machine_needs_checking

    if machine_needs_checking(params):
        check_or_exit(params, import_unsloth=False)
    MARKER.parent.mkdir(parents=True, exist_ok=True)
    MARKER.write_text("params.yaml is valid\n")


if __name__ == "__main__":
    main()

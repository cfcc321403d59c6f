"""Stage `validate`: check params.yaml against the schema before any other stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so a bad value caught
inside `train` would already have cost the previous checkpoints. This stage comes first
in the DAG (every stage depends on its marker file, whose content never changes), so a
bad params.yaml stops `dvc exp run` before anything is touched. That includes values this
machine cannot run (spelltune.modeling.backends), e.g. model.load_in_4bit on a CPU, params that
name things outside the repository (model.source), which are looked up here without the
network (a model directory's config.json and safetensors headers too, what prepare_model
reads first; no weights), lora.r above the model's hidden size, and split sizes the word
list cannot fill (spelltune.training.preflight, which `spelltune check` runs too). It also
claims the workspace for its `dvc exp run` (spelltune/workspace.py): a second run started in
it stops here.
"""

from __future__ import annotations

from spelltune.errors import fail
from spelltune.integrity import STAGE_INPUTS, verify_or_exit
from spelltune.params import ParamsError
from spelltune.paths import PARAMS_OK
from spelltune.training.preflight import check
from spelltune.workspace import claim, restore_hint


def main() -> None:
    from spelltune.modeling.backends import BackendError

    try:
        claim()  # first: a second run in this workspace stops here, the first run's params.yaml restored
    except ParamsError as exc:
        fail(exc)
    try:
        check()
    except (ParamsError, BackendError) as exc:
        fail(f"{exc}{restore_hint()}")
    # The stages' recorded inputs, before DVC removes any output (spelltune/integrity.py).
    verify_or_exit(STAGE_INPUTS)
    PARAMS_OK.parent.mkdir(parents=True, exist_ok=True)
    PARAMS_OK.write_text("params.yaml is valid\n")


if __name__ == "__main__":
    main()

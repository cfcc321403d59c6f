"""Stage `train`: LoRA fine-tuning of the base model with HF Trainer + PEFT or Unsloth
(spelltune.modeling.backends), the loss on answer tokens only.

    python -m spelltune.stages.train

Reads data/{train,validation}.jsonl and data/base_model/, writes the adapter to
checkpoints/adapter/ and the training curves through DVCLive to metrics/train/.
The recipe: set up (resume point, trackers, model, trainer), train, export, summarise.
"""

from __future__ import annotations

import logging
import os

from spelltune.errors import fail
from spelltune.training.startup import loaded, pause_collector
from spelltune.workspace import load_pinned_or_exit

log = logging.getLogger("spelltune.stages.train")


def main() -> None:
    pause_collector()
    params, pin = load_pinned_or_exit("train")  # pin: outputs are recorded only if params.yaml still holds these
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # Before anything loads: this worker's slot (its GPU, its share of the cores), then the backend.
    from spelltune.modeling.backends import check_or_exit
    from spelltune.training.devices import claim_worker

    if params.train.processes > 1 and "LOCAL_RANK" not in os.environ:
        check_or_exit(params, import_unsloth=False)  # a bad backend for DDP says so before anything starts
        from spelltune.training.recipe import launch_torchrun

        code = launch_torchrun(params)
        if code == 0:
            pin.check_or_exit()
        raise SystemExit(code)
    worker = claim_worker(params.train.threads)
    choice = check_or_exit(params)
    from spelltune.files import DataFileError, disk_full
    from spelltune.training.trainer import TrainingDiverged

    try:
        train(params, worker, choice, pin)
    except TrainingDiverged as exc:
        log.error("training stopped at %s; the last good checkpoint is kept for a rerun to resume from", exc)
        raise SystemExit(1) from None
    except DataFileError as exc:  # before anything was removed: see train()
        fail(str(exc))
    except Exception as exc:
        full = disk_full(exc)
        if full is None:
            raise
        fail(f"{full}: training stopped; the checkpoints saved before it are kept: free space and rerun to resume")
    pin.check_or_exit()  # again at the exit, after which DVC records the params


def train(params, worker=None, choice=None, pin=None) -> dict:
    """worker (spelltune.training.devices) and choice (spelltune.modeling.backends) default to
    this process's slot and this machine's backend. pin (spelltune.workspace.ParamsPin): checked
    before the final outputs are written. The run's summary ({} in a DDP process but 0)."""
    from spelltune.files import read_jsonl

    # The inputs parse before anything of an earlier run (curves, checkpoints) is removed.
    data = {split: read_jsonl(f"data/{split}.jsonl") for split in ("train", "validation")}
    from spelltune.modeling import backends
    from spelltune.training.devices import claim_worker
    from spelltune.training.recipe import TrainRecipe

    recipe = TrainRecipe(params, worker or claim_worker(params.train.threads), choice or backends.check_or_exit(params))
    recipe.setup(data)
    loaded()
    recipe.train()
    if not recipe.main:
        return {}
    if pin is not None:  # params.yaml changed under this run: write no outputs for DVC to record
        pin.check_or_exit()
    return recipe.save()


if __name__ == "__main__":
    main()

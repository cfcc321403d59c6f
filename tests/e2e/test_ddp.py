"""One experiment trained by two processes (DDP, `train.processes: 2`) on the CPU with
torch's gloo backend, through a plain `dvc exp run`: process 0 writes the curves,
checkpoints, W&B run and summary once, and each step sees the same examples, loss and
gradient norm as one process with a batch twice as large."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import TINY_OVERRIDES, run, set_args

pytestmark = pytest.mark.e2e

CURVES = "metrics/train/plots/metrics"


def curve(repo, name: str) -> list[tuple[int, float]]:
    rows = (repo / CURVES / f"{name}.tsv").read_text().splitlines()[1:]
    return [(int(r.split("\t")[1]), float(r.split("\t")[2])) for r in rows]


def test_ddp_run_matches_one_process_with_the_global_batch(repo, tiny_model, tmp_path):
    # lora.dropout 0: dropout masks come from each process's own random stream.
    overrides = {"model.source": str(tiny_model), **TINY_OVERRIDES, "train.threads": 1, "train.val_generate_items": 4,
                 "lora.dropout": 0.0}
    single = tmp_path / "single"
    shutil.copytree(repo, single, symlinks=True)
    run(["dvc", "exp", "run", *set_args({**overrides, "train.batch_size": 4})], single, timeout=900)

    proc = run(
        ["dvc", "exp", "run", *set_args({**overrides, "train.batch_size": 2, "train.processes": 2})], repo, timeout=900
    )
    assert "train.processes = 2: starting a DDP run under torchrun" in proc.stdout + proc.stderr
    summary = json.loads((repo / "metrics/summary.json").read_text())
    assert summary["worker"]["workers"] == 2 and summary["worker"]["workers_from"] == "torchrun"
    assert summary["backend"]["name"] == "hf"
    one = json.loads((single / "metrics/summary.json").read_text())
    assert summary["tokens_seen"] == one["tokens_seen"]  # the same examples, split over the two processes

    # Logged once per step (by process 0), and the same loss and gradient norm as one
    # process with the global batch: gradients are averaged over the processes and the loss
    # is normalised by the answer tokens of both.
    for name in ("train/loss", "train/grad_norm"):
        ddp, whole = curve(repo, name), curve(single, name)
        assert [step for step, _ in ddp] == [2, 4, 6], name
        assert [v for _, v in ddp] == pytest.approx([v for _, v in whole], rel=1e-4), name
    assert (repo / "checkpoints/adapter/adapter_model.safetensors").exists()
    # One W&B run (process 0's): its training directory, and evaluate's resumption of the same id.
    assert len({d.name.rsplit("-", 1)[1] for d in (repo / "wandb").glob("offline-run-*")}) == 1

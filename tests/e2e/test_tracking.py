"""Tracking end to end: a `dvc exp run` lands in DVCLive and in W&B (offline here) under one metric
contract, no secret reaches a file the run writes, and a broken W&B never stops a run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import TINY_OVERRIDES, run, set_args
from spelltune.experiments.wandb_runs import read_wandb_run
from spelltune.task.questions import ITEMS_PER_HELD_OUT_WORD

pytestmark = pytest.mark.e2e


SECRETS = {
    "WANDB_API_KEY": "wandbkey-0123456789abcdef0123456789abcdef",
    "HF_TOKEN": "hf_tokenvalue_0123456789",
    "MY_SERVICE_SECRET": "servicesecret-987654321",
    "PAYMENTS_KEY": "paymentskey-13579",
}


CURVES = "metrics/train/plots/metrics"


def tsv_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_queued_style_run_tracked_in_dvclive_and_wandb_without_secrets(repo, tiny_model, tmp_path):
    """A `--temp` experiment runs in a copy under .dvc/tmp/exps that DVC deletes; its W&B
    offline run must land in the original repository."""
    overrides = {"model.source": str(tiny_model), **TINY_OVERRIDES}
    env = {**SECRETS, "WANDB_MODE": "offline", "WANDB_RUN_GROUP": "grid-lr"}
    run(["dvc", "exp", "run", "--temp", "--name", "tracked", *set_args(overrides)], repo, env=env, timeout=900)
    assert not list((repo / ".dvc/tmp/exps").glob("tmp*")), "the temporary copy is expected to be gone"

    # W&B: one offline run named after the experiment, in the original repo's wandb/; the
    # evaluate stage resumed it (a second offline directory of the same run id) for the scores.
    runs = [read_wandb_run(d) for d in (repo / "wandb").glob("offline-run-*")]
    assert len(runs) == 2 and len({d.name.rsplit("-", 1)[1] for d in (repo / "wandb").glob("offline-run-*")}) == 1
    (wb,) = [r for r in runs if r["history"]]
    (scores,) = [r["summary"] for r in runs if not r["history"]]
    assert wb["name"] == "tracked" and wb["group"] == "grid-lr"
    fingerprint = wb["config"]["params_fingerprint"]
    assert set(wb["tags"]) == {tiny_model.name, "spelling", "hf-cpu", f"params-{fingerprint}"}
    assert len(fingerprint) == 16
    assert wb["config"]["train"]["max_steps"] == TINY_OVERRIDES["train.max_steps"]

    # The same metrics at the same steps in both trackers.
    run(["dvc", "exp", "apply", "tracked"], repo)
    curves = repo / CURVES
    for name in ("train/loss", "train/grad_norm", "time/wallclock_hours", "throughput/tokens_per_second",
                 "memory/rss_mb", "val/loss", "val/letter_position_accuracy", "val/wallclock_hours"):
        rows = tsv_rows(curves / f"{name}.tsv")
        assert rows[0][:2] == ["timestamp", "step"], name  # the wall-clock column
        dvclive = {int(r[1]): float(r[2]) for r in rows[1:]}
        in_wandb = {row["_step"]: row[name] for row in wb["history"] if name in row}
        assert in_wandb == pytest.approx(dvclive), name

    summary = json.loads((repo / "metrics/summary.json").read_text())
    run_id = next((repo / "wandb").glob("offline-run-*")).name.rsplit("-", 1)[1]
    assert (repo / ".spelltune/wandb-runs" / summary["params_fingerprint"]).read_text().strip() == run_id
    assert "wandb_run_id" not in summary  # not in DVC's outputs: a rerun stays bit-identical
    evaluated = json.loads((repo / "metrics/eval.json").read_text())
    assert evaluated and {k: scores[k] for k in evaluated} == pytest.approx(evaluated)  # every final score
    assert wb["summary"]["best_step"] == summary["best_step"]
    assert wb["summary"]["best/val/loss"] == pytest.approx(summary["best"]["val/loss"])
    assert wb["summary"]["early_stop_reason"] == summary["early_stop_reason"]

    # `dvc plots diff` has loss and accuracy against steps and against wall-clock hours.
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    assert not plots.get("errors"), plots.get("errors")
    for plot_id in ("loss_by_step", "loss_by_hours", "val_loss_by_hours", "accuracy_by_step", "accuracy_by_hours"):
        assert plots["data"][plot_id], plot_id
    assert all("wallclock_hours" in row for row in plots["data"]["accuracy_by_hours"][0]["content"]["data"]["values"])

    # No secret's value in any file the run wrote (W&B's own files and config included).
    leaks = [
        str(path.relative_to(repo))
        for path in repo.rglob("*")
        if path.is_file() and ".git" not in path.parts
        for secret in SECRETS.values()
        if secret.encode() in path.read_bytes()
    ]
    assert not leaks


def test_broken_wandb_package_run_completes(repo, tiny_model, tmp_path):
    """A W&B that fails to import costs one warning; DVCLive output stays complete."""
    broken = tmp_path / "broken"
    (broken / "wandb").mkdir(parents=True)
    (broken / "wandb" / "__init__.py").write_text("raise ImportError('this wandb is broken')\n")
    overrides = {"model.source": str(tiny_model), **TINY_OVERRIDES}
    env = {"PYTHONPATH": f"{broken}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = run(["dvc", "exp", "run", *set_args(overrides)], repo, env=env, timeout=900)
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if "W&B start failed" in line]
    assert len(warnings) == 1 and "this wandb is broken" in warnings[0]
    steps = [int(r[1]) for r in tsv_rows(repo / CURVES / "train/loss.tsv")[1:]]
    assert steps == [2, 4, 6]
    assert (
        json.loads((repo / "metrics/eval_details.json").read_text())["test"]["n_items"]
        == ITEMS_PER_HELD_OUT_WORD * TINY_OVERRIDES["data.test_words"]
    )
    assert not (repo / "wandb").exists()


def test_wandb_run_id_names_the_experiments_one_run(repo, tiny_model):
    """`WANDB_RUN_ID=rid1 dvc exp run` (as `wandb agent` and `spelltune sweep run` start a
    trial): the train stage's W&B run is rid1 and the evaluate stage's scores join it; no run
    of another id."""
    overrides = {"model.source": str(tiny_model), **TINY_OVERRIDES}
    env = {"WANDB_MODE": "offline", "WANDB_RUN_ID": "rid1"}
    run(["dvc", "exp", "run", "-S", "train.lr=0.006", *set_args(overrides)], repo, env=env, timeout=900)

    run_dirs = list((repo / "wandb").glob("offline-run-*"))
    assert {d.name.rsplit("-", 1)[1] for d in run_dirs} == {"rid1"}
    runs = [read_wandb_run(d) for d in run_dirs]
    (trained,) = [r for r in runs if r["history"]]
    (scores,) = [r["summary"] for r in runs if not r["history"]]
    assert trained["config"]["train"]["lr"] == 0.006
    evaluated = json.loads((repo / "metrics/eval.json").read_text())
    assert evaluated and {k: scores[k] for k in evaluated} == pytest.approx(evaluated)
    fingerprint = json.loads((repo / "metrics/summary.json").read_text())["params_fingerprint"]
    assert (repo / ".spelltune/wandb-runs" / fingerprint).read_text().strip() == "rid1"


def silent_server():
    """A local port that accepts TCP connections, reads what is sent and never answers;
    (port, the request lines received, stop)."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    held, requests, stopped = [], [], threading.Event()

    def read(conn) -> None:
        data = b""
        while b"\r\n" not in data and not stopped.is_set():
            try:
                chunk = conn.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            data += chunk
        requests.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))

    def accept() -> None:
        while not stopped.is_set():
            try:
                conn = server.accept()[0]
            except OSError:
                return
            held.append(conn)
            threading.Thread(target=read, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    def stop() -> None:
        stopped.set()
        server.close()
        for conn in held:
            conn.close()

    return server.getsockname()[1], requests, stop


def test_wandb_server_that_never_answers_costs_no_more_than_a_closed_port(repo, tiny_model, monkeypatch):
    """W&B online with a key and a server that accepts and never replies: like a closed port
    (e2e/test_faults.py), each stage's run logs offline after W&B's bounded start, one warning
    each, and the run completes (its seconds are printed: no wall-clock assert)."""
    import time

    monkeypatch.delenv("WANDB_INIT_TIMEOUT", raising=False)  # the default bound
    port, requests, stop = silent_server()
    overrides = {"model.source": str(tiny_model), **TINY_OVERRIDES}
    key = "k" * 8 + "0123456789abcdef" * 2  # 40 characters, like a W&B API key
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": key, "WANDB_BASE_URL": f"http://127.0.0.1:{port}"}
    try:
        start = time.monotonic()
        proc = run(["dvc", "exp", "run", *set_args(overrides)], repo, env=env, timeout=900)
        seconds = time.monotonic() - start
    finally:
        stop()
    output = proc.stdout + proc.stderr
    warnings = [line for line in output.splitlines() if "W&B could not start online" in line]
    print(f"dvc exp run against a silent W&B server: {seconds:.1f} s; requests {requests}; warnings {warnings}")
    assert len(warnings) == 2 and all("logging offline" in line for line in warnings), warnings  # train, evaluate
    assert key not in output
    # Once a stage's start gave up on the server, nothing more is sent to it (no W&B error
    # report of that start, which a silent server held for 10 s twice at each stage's exit).
    assert not [line for line in requests if not line.startswith("POST /graphql ")], requests
    run_dirs = list((repo / "wandb").glob("offline-run-*"))
    assert len({d.name.rsplit("-", 1)[1] for d in run_dirs}) == 1  # evaluate joined training's run
    runs = [read_wandb_run(d) for d in run_dirs]
    (trained,) = [r for r in runs if r["history"]]
    assert [row["_step"] for row in trained["history"] if "train/loss" in row] == [2, 4, 6]
    (scores,) = [r["summary"] for r in runs if not r["history"]]
    evaluated = json.loads((repo / "metrics/eval.json").read_text())
    assert {k: scores[k] for k in evaluated} == pytest.approx(evaluated)

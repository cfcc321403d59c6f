"""Issue 41, item 3: a corrupt DVC cache object (a flipped byte, its mtime kept) leaves `dvc
status` clean; the next `dvc exp run` must not train on it, and `ask --exp` / `export --peft
--exp` must not serve or ship it. The user's sequence, real git and DVC, the tiny model."""

from __future__ import annotations

import os
import sys

import pytest
import yaml

from conftest import TINY_OVERRIDES, run, set_args

pytestmark = pytest.mark.e2e


def cache_object(repo, md5: str):
    return repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]


def flip_a_byte(path) -> None:
    """One byte changed in place, size and mtime kept (what DVC's state database trusts)."""
    stat = path.stat()
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    with open(path, "r+b") as f:  # in place: the workspace's hardlink is this same file
        f.write(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def lock_md5(repo, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == path)


def test_a_corrupt_cache_object_is_refused_not_used(repo, tiny_model):
    overrides = {"model.source": str(tiny_model), **TINY_OVERRIDES}
    run(["dvc", "exp", "run", "-n", "first", *set_args(overrides)], repo, timeout=900)

    # data/train.jsonl's cache object: `dvc status` stays clean, the next run refuses it
    flip_a_byte(cache_object(repo, lock_md5(repo, "prepare", "data/train.jsonl")))
    status = run(["dvc", "status"], repo).stdout
    assert "changed deps" not in status and "changed outs" not in status, status  # DVC sees nothing wrong
    before = (repo / "checkpoints/adapter/adapter_model.safetensors").read_bytes()
    proc = run(["dvc", "exp", "run", *set_args({**overrides, "train.lr": 0.005})], repo, check=False, timeout=900)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines and "data/train.jsonl: its content does not match the md5 DVC recorded" in lines[0], proc.stderr
    assert "set aside as .spelltune/corrupt/" in lines[0] and "stage prepare makes it anew" in lines[0]
    assert "Traceback" not in proc.stderr
    # refused by validate, before DVC removed any output: the last run's adapter is still there
    assert (repo / "checkpoints/adapter/adapter_model.safetensors").read_bytes() == before

    # an experiment's adapter object: `ask --exp` and `export --peft --exp` refuse it
    # run again, as the line says: prepare makes the file anew, the run goes through
    again = run(["dvc", "exp", "run", *set_args({**overrides, "train.lr": 0.005})], repo, timeout=900)
    assert "Running stage 'prepare'" in again.stdout
    run(["dvc", "exp", "apply", "first"], repo)
    checkpoints = lock_md5(repo, "train", "checkpoints")
    listing = yaml.safe_load(cache_object(repo, checkpoints.removesuffix(".dir") + ".dir").read_text())
    weights = next(e["md5"] for e in listing if e["relpath"] == "adapter/adapter_model.safetensors")
    flip_a_byte(cache_object(repo, weights))
    cli = [sys.executable, "-m", "spelltune.cli"]
    for cmd in (["ask", "--exp", "first", "Spell 'cat' letter by letter."],
                ["export", "--exp", "first", "--peft", str(repo.parent / "exported")]):
        proc = run([*cli, *cmd], repo, check=False, timeout=300)
        assert proc.returncode == 2, (cmd, proc.stdout, proc.stderr)
        assert proc.stderr.strip().startswith("error: --exp first: checkpoints/adapter/adapter_model.safetensors: "
                                              "its content does not match"), proc.stderr
    assert not (repo.parent / "exported").exists()

"""Checksummed checkpoints and the resume store (training/checkpoints.py): corrupt, partial or
manifest-less checkpoints are skipped. (Killed runs that resume: e2e/test_checkpoints.py.)"""

from __future__ import annotations

import json

from spelltune.training import checkpoints


def test_corrupt_or_partial_checkpoints_are_skipped(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        staging = checkpoints.staging_dir(root, step)
        staging.mkdir(parents=True)
        (staging / "weights.safetensors").write_bytes(bytes([step]) * 64)
        checkpoints.commit(staging, "abc", {"step": step})
    checkpoints.staging_dir(root, 8).mkdir()  # killed mid-write: never renamed into place
    (root / "checkpoint-6" / "weights.safetensors").write_bytes(b"\0" * 64)
    assert checkpoints.resumable(root, "abc") == root / "checkpoint-4"
    assert "checkpoint-6: weights.safetensors does not match its checksum" in caplog.text
    assert checkpoints.resumable(root, "other params") is None
    checkpoints.rotate(root, keep_last=1, best=root / "checkpoint-2")
    assert [p.name for p in checkpoints.checkpoints(root)] == ["checkpoint-6", "checkpoint-2"]


def test_manifest_without_files_is_skipped_with_one_warning(tmp_path, caplog):
    root = tmp_path / "store"
    for step in (2, 4):
        staging = checkpoints.staging_dir(root, step)
        staging.mkdir(parents=True)
        (staging / "weights.safetensors").write_bytes(bytes([step]) * 16)
        checkpoints.commit(staging, "abc", {"step": step})
    (root / "checkpoint-4" / checkpoints.MANIFEST).write_text(json.dumps({"fingerprint": "abc", "state": {}}))
    (root / "checkpoint-6").mkdir()
    (root / "checkpoint-6" / checkpoints.MANIFEST).write_text("[1, 2]")  # JSON, not a manifest either
    assert checkpoints.resumable(root, "abc") == root / "checkpoint-2"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all("is not a manifest" in w for w in warnings)

"""W&B runs read back from their local files (`wandb/offline-run-*/run-<id>.wandb`): what an
offline run holds before `wandb sync`, without a server. W&B writes no summary file for an
offline run, so its records are read from the run file itself."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def wandb_records(path: Path):
    """The records of a W&B run file (.wandb): a LevelDB-style log of protobuf records
    after a 7-byte header, in 32 KiB blocks of chunks (crc32c, length, type, data)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def read_wandb_run(run_dir: Path) -> dict:
    """Name, config, tags, group, history rows and summary of one local run directory."""
    out = {"history": [], "summary": {}, "config": {}}
    (run_file,) = run_dir.glob("run-*.wandb")
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(name=record.run.display_name, group=record.run.run_group, tags=list(record.run.tags))
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            out["history"].append(row)
        elif kind == "summary":
            out["summary"].update(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update}
            )
    return out


def local_runs(directory: Path) -> dict[str, dict]:
    """Every run under `directory`/wandb by id, its directories merged in time order (evaluate
    resumes the training's run in a second directory of the same id)."""
    found: dict[str, dict] = {}
    for run_dir in sorted(Path(directory).glob("wandb/*run-*-*")):
        if not list(run_dir.glob("run-*.wandb")):
            continue
        run_id, one = run_dir.name.rsplit("-", 1)[1], read_wandb_run(run_dir)
        merged = found.setdefault(run_id, {"history": [], "summary": {}, "config": {}})
        merged["history"] += one.pop("history")
        merged["summary"].update(one.pop("summary"))
        merged["config"].update(one.pop("config"))
        merged.update({k: v for k, v in one.items() if v})
    return found

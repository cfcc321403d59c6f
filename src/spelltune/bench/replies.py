"""Replay the evaluate stage's recorded replies with the current generation code:
how many are byte-identical, and items/s against the stage's own recorded time.

    python -m spelltune.bench.replies [--out bench/replies.json]

Reads the workspace's metrics/predictions/eval.jsonl and metrics/eval_details.json (the
last evaluate run) and answers the same items with data/base_model + checkpoints/adapter,
merged, as the stage does. Run it alone on the machine: both times are wall clock."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/replies.json")
    args = parser.parse_args(argv)

    from spelltune.files import read_jsonl
    from spelltune.modeling.generation import generate_replies
    from spelltune.modeling.lora import load_merged
    from spelltune.params import load_or_exit
    from spelltune.paths import ADAPTER_DIR, METRIC_PREFIX, METRICS_DIR

    params = load_or_exit()
    model, tokenizer = load_merged(ADAPTER_DIR)
    recorded = read_jsonl(METRICS_DIR / "predictions" / "eval.jsonl")
    stage = json.loads((METRICS_DIR / "eval_details.json").read_text())
    result = {}
    for split, prefix in METRIC_PREFIX.items():
        rows = [r for r in recorded if r["split"] == split]
        start = time.perf_counter()
        replies = generate_replies(model, tokenizer, rows, params.model.prompt_format, params.eval.batch_size,
                                   letter_answer=params.data.letter_answer)
        seconds = time.perf_counter() - start
        differ = [{"question": r["question"], "recorded": r["reply"], "now": now}
                  for r, now in zip(rows, replies) if r["reply"] != now]
        result[split] = {
            "items": len(rows), "identical": len(rows) - len(differ), "differ": differ[:20],
            "seconds": seconds, "recorded_seconds": stage[prefix]["eval_time_seconds"],
            "speedup": stage[prefix]["eval_time_seconds"] / seconds,
        }
        print(f"{split}: {result[split]['identical']}/{len(rows)} identical, {seconds:.1f} s against "
              f"{stage[prefix]['eval_time_seconds']:.1f} s recorded ({result[split]['speedup']:.2f}x)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

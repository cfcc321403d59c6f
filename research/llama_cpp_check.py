"""Does llama.cpp itself answer like the adapter? (issue 26, item 4)

    spelltune export --gguf /tmp/spelling.gguf
    python research/llama_cpp_check.py /tmp/spelling.gguf [N] > research/llama_cpp_check.json

Loads the GGUF that `spelltune export --gguf` wrote in llama-cpp-python (llama.cpp's own
loader, tokenizer and CPU kernels), asks the first N test items of the committed run's
metrics/predictions/eval.jsonl in the evaluate stage's prompt, greedy, and compares each
reply with the adapter's reply recorded there (transformers + PEFT, fp32). Prints a JSON
summary: identical replies, replies that only run past the evaluate stage's token budget
(which cuts the adapter's reply where the answer's own tokens end), and each side's score.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from spelltune.task.prompts import COMPACT_PROMPT
from spelltune.task.scoring import score_item


def main() -> None:
    from llama_cpp import Llama

    gguf, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200
    rows = [json.loads(line) for line in Path("metrics/predictions/eval.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["split"] == "test"][:n]
    start = time.perf_counter()
    llm = Llama(model_path=gguf, n_ctx=256, n_threads=2, verbose=False)
    loaded = time.perf_counter() - start
    same = extends = right_llama = right_adapter = 0
    differ = []
    for row in rows:
        out = llm.create_completion(COMPACT_PROMPT.format(question=row["question"]), max_tokens=48, temperature=0.0,
                                    top_k=1, stop=["<|im_end|>"])
        reply = out["choices"][0]["text"].strip()
        same += reply == row["reply"].strip()
        # The evaluate stage stops a reply at its answer's token budget; llama.cpp here at 48.
        extends += reply.startswith(row["reply"].strip())
        right_llama += bool(score_item(row, reply)["correct"])
        right_adapter += bool(row["correct"])
        if reply != row["reply"].strip() and len(differ) < 10:
            differ.append({"question": row["question"], "adapter": row["reply"], "llama.cpp": reply})
    print(json.dumps({"items": len(rows), "identical_replies": same, "agreement": same / len(rows),
                      "same_up_to_the_adapters_token_budget": extends,
                      "correct_llama_cpp": right_llama, "correct_adapter": right_adapter,
                      "load_seconds": round(loaded, 1), "seconds": round(time.perf_counter() - start, 1),
                      "first_differences": differ}, indent=2))


if __name__ == "__main__":
    main()

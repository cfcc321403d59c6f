#!/usr/bin/env bash
# Behaviour unchanged across a refactor: the tiny-model pipeline's outputs and a short real
# train stage at each commit given, in a clone of this repository, with this venv and each
# commit's own src first on PYTHONPATH. Compare the .sha files it writes under $OUT.
#     bash research/identity_check.sh REV_BEFORE REV_AFTER
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=$REPO/.venv/bin
OUT=${OUT:-/tmp/identity}; mkdir -p "$OUT"
TINY="-S data.train_words=40 -S data.validation_words=4 -S data.test_words=4 -S train.max_steps=6
      -S train.warmup_steps=1 -S train.batch_size=4 -S train.log_every=2 -S train.eval_every=3
      -S train.save_every=2 -S train.val_loss_items=8 -S eval.batch_size=8"
[ -e "$OUT/tiny-model" ] || PYTHONPATH=$REPO/src "$VENV/python" -c \
    "from pathlib import Path; from spelltune.modeling.base import make_tiny_model; make_tiny_model(Path('$OUT/tiny-model'))"
for rev in "$@"; do
  d=$OUT/clone-$rev; rm -rf "$d"; git clone -q "$REPO" "$d"; git -C "$d" checkout -q "$rev"
  cd "$d"
  export PATH=$VENV:$PATH PYTHONPATH=$d/src WANDB_MODE=disabled
  # shellcheck disable=SC2086
  dvc exp run -q -n tiny -S model.source="$OUT/tiny-model" $TINY > "$OUT/$rev-tiny.log" 2>&1
  sha256sum checkpoints/adapter/adapter_model.safetensors metrics/eval.json metrics/predictions/eval.jsonl \
      metrics/headline.json plots/report.md > "$OUT/$rev-tiny.sha"
  # eval_details.json less its wall times (eval_time_seconds differs between any two runs)
  python -c "import hashlib, json; d = json.load(open('metrics/eval_details.json'))
[s.pop('eval_time_seconds', None) for s in d.values()]
print(hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest(), 'eval_details.json less eval_time_seconds')" \
      >> "$OUT/$rev-tiny.sha"
  git checkout -q -- . && git clean -qfdx > /dev/null
  dvc exp run -q train -n real -S train.max_steps=8 -S train.warmup_steps=2 -S train.eval_every=4 \
      -S train.save_every=4 -S train.log_every=2 > "$OUT/$rev-real.log" 2>&1
  sha256sum checkpoints/adapter/adapter_model.safetensors > "$OUT/$rev-real.sha"
  cd "$REPO"
done

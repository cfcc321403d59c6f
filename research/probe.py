"""Linear probes for what the FROZEN base model's embeddings and hidden states know about a
token's letters (Itzhak & Levy 2022, "Models in a Spelling Bee"; issue 37 item 4).

Tokens: the tokenizer's vocabulary pieces that are lowercase a-z, 3-10 letters, WITHOUT the
leading-space marker: inside the canonical prompt "Spell 'banana' letter by letter." the word
follows the token "Ġ'", so a one-token word is its bare piece ("sand", not "Ġsand"). Each
candidate is kept only if it really is one token inside that prompt (checked with the
tokenizer, in the compact ChatML prompt the pipeline uses).

Split by word: the project's validation and test words (spelltune.task.questions.build_splits
on params.yaml's data section) are held out, plus a seeded random --held-share of the rest.

Features, per layer: hidden_states[k] (k = 0: the input embedding; k = 30: the last layer,
after the final RMSNorm, as transformers returns it) at the word's position, with the
word inside the prompt (--context prompt; the prefix "<|im_start|>user\\nSpell '" is run once
and its KV cache reused: the model is causal, so the word's states are exactly those of the
full prompt) or the token alone (--context alone).

Probes, on z-scored features (train statistics), all heads one linear map:
  ridge     closed-form least squares on 0/1 / one-hot targets, every layer; L2 per head and
            per layer chosen on a dev split of the probe-train tokens (RIDGE_LAMBDAS); the
            z-scoring uses all probe-train tokens, dev included
  logistic  logistic / softmax regression (torch, full-batch L-BFGS, --iters), on
            --logistic-layers plus ridge's best layer; L2 per head chosen on the dev split
            at ridge's best layer, then fixed (LAMBDAS). Logistic fits cost ~15x ridge's on
            this shared 2-core machine, hence not every layer.
  --feature-cache: the features, and the candidate list they were made for, saved once and reused.
Heads:
  presence     26 binary "the token contains letter c"
  pos1..pos10  26-way "letter at position i" (trained/scored on tokens of >= i letters)
  last         26-way "last letter"
  length       8-way  "number of letters" (3..10)
Full spelling: every position 1..L right, with L the true length (full_given_length), or
also the predicted length right (full_predicted_length).

Run from the repository root:

    nice -n 15 .venv/bin/python research/probe.py --model-dir /tmp/probe_model

(/tmp/probe_model: materialize_base_model("embedded", Path("/tmp/probe_model")) when
data/base_model/ is absent.) Writes research/probe.{json,csv}.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import random
import re
import string
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).parent
LETTERS = string.ascii_lowercase
MIN_LEN, MAX_LEN = 3, 10
POSITIONS = list(range(1, MAX_LEN + 1))
PREFIX = "<|im_start|>user\nSpell '"  # the compact prompt up to the word (spelltune.task.prompts)
LAMBDAS = (3e-3, 3e-2)


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [float("nan"), float("nan")]
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [max(0.0, c - h), min(1.0, c + h)]


def candidate_tokens(tokenizer) -> list[tuple[str, int]]:
    """(word, token id) for bare a-z pieces of 3-10 letters that are one token in the prompt."""
    from spelltune.task.prompts import render_prompt
    from spelltune.task.wordings import canonical_question

    prefix_ids = tokenizer(PREFIX, add_special_tokens=False)["input_ids"]
    vocab = tokenizer.get_vocab()
    out = []
    for piece, tid in sorted(vocab.items(), key=lambda kv: kv[1]):
        if not re.fullmatch(f"[a-z]{{{MIN_LEN},{MAX_LEN}}}", piece):
            continue
        prompt = render_prompt(canonical_question("spelling", piece), "compact", tokenizer)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if ids[: len(prefix_ids)] == prefix_ids and ids[len(prefix_ids)] == tid \
                and tokenizer.decode(ids[len(prefix_ids) + 1 :]).startswith("'"):
            out.append((piece, tid))
    return out


@torch.no_grad()
def features(model, tokenizer, ids: list[int], context: str, batch: int) -> np.ndarray:
    """[n tokens, n layers + 1, hidden] float32."""
    out = []
    prefix = None
    if context == "prompt":
        pre_ids = torch.tensor([tokenizer(PREFIX, add_special_tokens=False)["input_ids"]])
        prefix = model(pre_ids, use_cache=True).past_key_values
    for start in range(0, len(ids), batch):
        x = torch.tensor(ids[start : start + batch]).unsqueeze(1)
        kwargs = {}
        if prefix is not None:
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(x.shape[0])
            kwargs = {"past_key_values": cache, "use_cache": True}
        hs = model(x, output_hidden_states=True, **kwargs).hidden_states
        out.append(torch.stack([h[:, -1] for h in hs], 1).numpy())
        print(f"  features {min(start + batch, len(ids))}/{len(ids)}", flush=True)
    return np.concatenate(out)


def targets(words: list[str]) -> dict[str, torch.Tensor]:
    t = {"presence": torch.tensor([[float(c in w) for c in LETTERS] for w in words])}
    for i in POSITIONS:
        t[f"pos{i}"] = torch.tensor([LETTERS.index(w[i - 1]) if len(w) >= i else -100 for w in words])
    t["last"] = torch.tensor([LETTERS.index(w[-1]) for w in words])
    t["length"] = torch.tensor([len(w) - MIN_LEN for w in words])
    return t


HEADS = {"presence": 26, **{f"pos{i}": 26 for i in POSITIONS}, "last": 26, "length": MAX_LEN - MIN_LEN + 1}
SLICES, _o = {}, 0
for _h, _k in HEADS.items():
    SLICES[_h] = slice(_o, _o + _k)
    _o += _k
N_OUT = _o


def fit(x: torch.Tensor, t: dict, lam: dict[str, float], iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All heads at once (their losses and penalties are separate, so this is one probe per head)."""
    w = torch.zeros(x.shape[1], N_OUT, requires_grad=True)
    b = torch.zeros(N_OUT, requires_grad=True)
    lam_col = torch.cat([torch.full((k,), lam[h]) for h, k in HEADS.items()])
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        z = x @ w + b
        presence = F.binary_cross_entropy_with_logits(z[:, SLICES["presence"]], t["presence"], reduction="none")
        loss = presence.mean(0).sum()
        for h in HEADS:
            if h != "presence":
                loss = loss + F.cross_entropy(z[:, SLICES[h]], t[h], ignore_index=-100)
        loss = loss + 0.5 * (lam_col * (w * w).sum(0)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def predict(x, w, b, threshold: float = 0.0) -> dict[str, torch.Tensor]:
    """threshold: on the presence outputs (0 for logits, 0.5 for ridge's least-squares outputs)."""
    z = x @ w + b
    p = {"presence": (z[:, SLICES["presence"]] > threshold).float()}
    for h in HEADS:
        if h != "presence":
            p[h] = z[:, SLICES[h]].argmax(1)
    return p


def ridge_stats(x: torch.Tensor, t: dict, lengths: torch.Tensor) -> dict[int, tuple]:
    """Sufficient statistics per word length L: n, sum x, x'x, sum y, x'y, with y every head's
    0/1 (presence) or one-hot (position, length) targets, zero where a position is past L."""
    y = torch.zeros(len(x), N_OUT)
    y[:, SLICES["presence"]] = t["presence"]
    for h in HEADS:
        if h != "presence":
            m = t[h] != -100
            y[m, SLICES[h]] = F.one_hot(t[h][m], HEADS[h]).float()
    out = {}
    for L in range(MIN_LEN, MAX_LEN + 1):
        m = lengths == L
        xl, yl = x[m].double(), y[m].double()
        out[L] = (int(m.sum()), xl.sum(0), xl.T @ xl, yl.sum(0), xl.T @ yl)
    return out


def add_stats(a: dict, b: dict) -> dict:
    return {L: tuple(u + v for u, v in zip(a[L], b[L])) for L in a}


def ridge_solutions(stats: dict, lams) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Closed-form ridge regression of every head, one (W, b) per L2 value; the position-i head
    only on tokens of >= i letters (the sum of the per-length statistics from i up)."""
    d = stats[MIN_LEN][1].shape[0]
    sols = [(torch.zeros(d, N_OUT), torch.zeros(N_OUT)) for _ in lams]
    eye = torch.eye(d, dtype=torch.float64)
    for k in range(MIN_LEN, MAX_LEN + 1):
        heads = ["presence", *[f"pos{i}" for i in POSITIONS if i <= MIN_LEN], "last", "length"] if k == MIN_LEN \
            else [f"pos{k}"]
        cols = torch.cat([torch.arange(N_OUT)[SLICES[h]] for h in heads])
        n, sx, sxx, sy, sxy = (sum(stats[L][j] for L in range(k, MAX_LEN + 1)) for j in range(5))
        mu, ym = sx / n, sy[cols] / n
        gram = sxx - n * torch.outer(mu, mu)
        xty = sxy[:, cols] - n * torch.outer(mu, ym)
        for (w, b), lam in zip(sols, lams):
            wk = torch.cholesky_solve(xty, torch.linalg.cholesky(gram + lam * eye))
            w[:, cols] = wk.float()
            b[cols] = (ym - mu @ wk).float()
    return sols


RIDGE_LAMBDAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def head_score(h: str, p: dict, t: dict) -> float:
    if h == "presence":
        return float((p[h] == t[h]).float().mean())
    m = t[h] != -100
    return float((p[h][m] == t[h][m]).float().mean())


def majority(t_train: dict, t_test: dict) -> dict[str, float]:
    """The majority baseline: each letter's majority presence, each position's commonest letter."""
    out = {}
    maj = (t_train["presence"].mean(0) > 0.5).float()
    out["presence_accuracy"] = float((t_test["presence"] == maj).float().mean())
    for h in HEADS:
        if h != "presence":
            v = t_train[h][t_train[h] != -100]
            m = t_test[h] != -100
            out[f"{h}_accuracy"] = float((t_test[h][m] == torch.mode(v).values).float().mean())
    return out


def scores(p: dict, t: dict, words: list[str], groups: dict[str, np.ndarray]) -> dict:
    out = {}
    pr, tr = p["presence"], t["presence"]
    out["presence_accuracy"] = float((pr == tr).float().mean())
    tp, fp, fn = (pr * tr).sum(0), (pr * (1 - tr)).sum(0), ((1 - pr) * tr).sum(0)
    f1 = torch.where(tp > 0, 2 * tp / (2 * tp + fp + fn), torch.zeros_like(tp))
    out["presence_macro_f1"] = float(f1.mean())
    for h in HEADS:
        if h != "presence":
            out[f"{h}_accuracy"] = head_score(h, p, t)
            out[f"n_{h}"] = int((t[h] != -100).sum())
    lengths = torch.tensor([len(w) for w in words])
    right = torch.ones(len(words), dtype=torch.bool)
    for i in POSITIONS:
        m = lengths >= i
        right &= ~m | (p[f"pos{i}"] == t[f"pos{i}"])
    with_len = right & (p["length"] == t["length"])
    for g, mask in groups.items():
        mask = torch.from_numpy(mask)
        n = int(mask.sum())
        for name, r in (("full_given_length", right), ("full_predicted_length", with_len)):
            k = int((r & mask).sum())
            key = name if g == "all" else f"{g}/{name}"
            out[key] = k / n if n else float("nan")
            out[f"{key}_ci95"] = wilson(k, n)
            out[f"{key}_n"] = n
        if g != "all":
            pm = torch.tensor([LETTERS.index(w[0]) for w in words])
            out[f"{g}/pos1_accuracy"] = float((p["pos1"][mask] == pm[mask]).float().mean()) if n else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=Path("data/base_model"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--context", choices=["prompt", "alone"], default="prompt")
    ap.add_argument("--held-share", type=float, default=0.2, help="share of the other tokens also held out")
    ap.add_argument("--dev-share", type=float, default=0.15, help="share of probe-train used to choose L2")
    ap.add_argument("--logistic-layers", default="0,30",
                    help="layers that get logistic probes too (plus the ridge probes' best layer)")
    ap.add_argument("--iters", type=int, default=30, help="L-BFGS iterations per fit")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--feature-cache", type=Path, default=None, help="reuse/save the features here (.npz)")
    ap.add_argument("--limit", type=int, default=0, help="smoke test: only this many tokens")
    ap.add_argument("--out", type=Path, default=HERE / "probe", help="writes OUT.json and OUT.csv")
    args = ap.parse_args()
    t0 = time.time()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spelltune.params import load
    from spelltune.task.questions import build_splits, ranked_words

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    if args.feature_cache and args.feature_cache.exists():
        vocab = tokenizer.get_vocab()
        cands = [(str(w), vocab[str(w)]) for w in np.load(args.feature_cache)["words"]]
    else:
        cands = candidate_tokens(tokenizer)
    if args.limit:
        cands = random.Random(args.seed).sample(cands, args.limit)
    words = [w for w, _ in cands]
    params = load(args.params)
    splits = build_splits(params.data)
    project_held = {it["word"] for name in ("validation", "test") for it in splits[name]}
    project_train = {it["word"] for it in splits["train"]}
    wordlist = set(ranked_words(MIN_LEN, MAX_LEN))
    rng = random.Random(args.seed)
    rest = [w for w in words if w not in project_held]
    extra = set(rng.sample(rest, round(args.held_share * len(rest))))
    held = np.array([w in project_held or w in extra for w in words])
    print(f"{len(words)} candidate tokens; held out {held.sum()} ({sum(w in project_held for w in words)} "
          f"project validation/test words + {len(extra)} random); probe-train {(~held).sum()}", flush=True)

    if args.feature_cache and args.feature_cache.exists():
        z = np.load(args.feature_cache)
        assert list(z["words"]) == words
        feats = z["feats"]
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
        feats = features(model, tokenizer, [tid for _, tid in cands], args.context, args.batch)
        del model
        if args.feature_cache:
            np.savez(args.feature_cache, feats=feats, words=np.array(words))
    t_feat = time.time() - t0
    n_layers = feats.shape[1]

    tr_idx, te_idx = np.flatnonzero(~held), np.flatnonzero(held)
    perm = np.random.RandomState(args.seed).permutation(tr_idx)
    n_dev = round(args.dev_share * len(perm))
    dev_idx, fit_idx = np.sort(perm[:n_dev]), np.sort(perm[n_dev:])
    tgt = targets(words)
    sel = lambda t, idx: {h: v[idx] for h, v in t.items()}  # noqa: E731
    t_tr, t_te = sel(tgt, tr_idx), sel(tgt, te_idx)
    words_te = [words[i] for i in te_idx]
    groups = {"all": np.ones(len(te_idx), bool),
              "project_held_out": np.array([w in project_held for w in words_te]),
              "random_held_out": np.array([w not in project_held for w in words_te]),
              "in_wordlist": np.array([w in wordlist for w in words_te])}

    def standardize(layer, a, bs):
        x = torch.from_numpy(feats[:, layer]).float()
        mu, sd = x[a].mean(0), x[a].std(0) + 1e-6
        return [(x[i] - mu) / sd for i in bs]

    lengths = torch.tensor([len(w) for w in words])
    t_fit, t_dev = sel(tgt, fit_idx), sel(tgt, dev_idx)
    base = majority(t_tr, t_te)

    def row_for(layer, p_te, p_tr):
        return {"layer": layer, "n_train": len(tr_idx), "n_held_out": len(te_idx),
                **scores(p_te, t_te, words_te, groups), "train_pos1_accuracy": head_score("pos1", p_tr, t_tr)}

    def show(kind, row):
        print(f"{kind} layer {row['layer']:2d}: presence F1 {row['presence_macro_f1']:.3f} "
              f"pos1 {row['pos1_accuracy']:.3f} "
              f"pos3 {row['pos3_accuracy']:.3f} last {row['last_accuracy']:.3f} len {row['length_accuracy']:.3f} "
              f"full|L {row['full_given_length']:.3f} ({time.time() - t0:.0f} s)", flush=True)

    # Ridge probes, every layer: L2 per head chosen on the dev split of probe-train, at each layer.
    ridge_rows, ridge_l2 = [], []
    for layer in range(n_layers):
        xt, xe = standardize(layer, tr_idx, (tr_idx, te_idx))
        pos = {i: j for j, i in enumerate(tr_idx)}
        xf, xd = xt[[pos[i] for i in fit_idx]], xt[[pos[i] for i in dev_idx]]
        s_fit, s_dev = ridge_stats(xf, t_fit, lengths[fit_idx]), ridge_stats(xd, t_dev, lengths[dev_idx])
        dev = [predict(xd, w, b, 0.5) for w, b in ridge_solutions(s_fit, RIDGE_LAMBDAS)]
        pick = {h: int(np.argmax([head_score(h, p, t_dev) for p in dev])) for h in HEADS}
        sols = ridge_solutions(add_stats(s_fit, s_dev), RIDGE_LAMBDAS)
        w, b = torch.zeros(xt.shape[1], N_OUT), torch.zeros(N_OUT)
        for h, j in pick.items():
            w[:, SLICES[h]], b[SLICES[h]] = sols[j][0][:, SLICES[h]], sols[j][1][SLICES[h]]
        ridge_l2.append({h: RIDGE_LAMBDAS[j] for h, j in pick.items()})
        row = row_for(layer, predict(xe, w, b, 0.5), predict(xt, w, b, 0.5))
        row["l2_per_head"] = ridge_l2[-1]
        ridge_rows.append(row)
        show("ridge", row)
    ridge_best = max(ridge_rows, key=lambda r: r["full_given_length"])["layer"]

    # Logistic probes (the headline), on a few layers: L2 per head chosen on the dev split at
    # the ridge probes' best layer, then fixed.
    xf, xd = standardize(ridge_best, fit_idx, (fit_idx, dev_idx))
    dev_scores = {h: {} for h in HEADS}
    for lam in LAMBDAS:
        p = predict(xd, *fit(xf, t_fit, dict.fromkeys(HEADS, lam), args.iters))
        for h in HEADS:
            dev_scores[h][lam] = head_score(h, p, t_dev)
        print(f"  logistic L2 {lam} on layer {ridge_best}: {time.time() - t0:.0f} s", flush=True)
    chosen = {h: max(LAMBDAS, key=lambda lam: dev_scores[h][lam]) for h in HEADS}
    print("logistic L2 per head:", chosen, flush=True)
    log_layers = sorted({int(s) for s in args.logistic_layers.split(",") if int(s) < n_layers} | {ridge_best})
    log_rows = []
    for layer in log_layers:
        xt, xe = standardize(layer, tr_idx, (tr_idx, te_idx))
        w, b = fit(xt, t_tr, chosen, args.iters)
        log_rows.append(row_for(layer, predict(xe, w, b), predict(xt, w, b)))
        show("logistic", log_rows[-1])
    log_best = max(log_rows, key=lambda r: r["full_given_length"])["layer"]

    args_out = {k: str(v) for k, v in vars(args).items() if v not in (None, 0) or k == "seed"}
    out = {
        "what": "linear probes on the frozen base model (SmolLM2-135M-Instruct, the embedded Q4_1 GGUF "
                "de-quantized to fp32), per layer, scored on held-out tokens; layer 0 = input embedding, "
                f"layer {n_layers - 1} = last hidden state (after the final norm)",
        "command": "nice -n 15 .venv/bin/python research/probe.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in args_out.items()),
        "token_form": "bare piece (no leading-space marker), as the word appears in "
                      "\"Spell 'X' letter by letter.\" after the token \"Ġ'\"",
        "context": args.context,
        "n_candidates": len(words),
        "n_train": len(tr_idx), "n_held_out": len(te_idx), "n_dev_within_train": len(dev_idx),
        "n_held_out_project_words": int(groups["project_held_out"].sum()),
        "n_held_out_random": int(groups["random_held_out"].sum()),
        "n_held_out_in_wordlist": int(groups["in_wordlist"].sum()),
        "n_project_train_words_among_tokens": sum(w in project_train for w in words),
        "majority_baseline": base,
        "ridge": {"l2_grid": RIDGE_LAMBDAS, "best_layer_by_full_given_length": ridge_best, "layers": ridge_rows},
        "logistic": {"l2_grid": LAMBDAS, "l2_per_head": chosen, "l2_chosen_on_layer": ridge_best,
                     "l2_dev_scores": {h: {str(k): v for k, v in d.items()} for h, d in dev_scores.items()},
                     "lbfgs_iterations": args.iters,
                     "best_layer_by_full_given_length": log_best, "layers": log_rows},
        "seconds_features": round(t_feat, 1),
        "seconds_total": round(time.time() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    cols = ["layer", "n_train", "n_held_out", "presence_accuracy", "presence_macro_f1",
            *[f"pos{i}_accuracy" for i in range(1, 6)], "last_accuracy", "length_accuracy",
            "full_given_length", "full_predicted_length",
            "project_held_out/full_given_length", "project_held_out/full_predicted_length",
            "random_held_out/full_given_length", *[f"pos{i}_accuracy" for i in range(6, 11)]]
    with args.out.with_suffix(".csv").open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["probe", *cols])
        wr.writerow(["majority", "", len(tr_idx), len(te_idx), f"{base['presence_accuracy']:.4f}", "0.0000",
                     *[f"{base[c]:.4f}" if c in base else "" for c in cols[5:]]])
        for kind, rows in (("logistic", log_rows), ("ridge", ridge_rows)):
            for r in rows:
                wr.writerow([kind, *[r[c] if isinstance(r[c], int) else f"{r[c]:.4f}" for c in cols]])
    print(f"wrote {args.out}.json/.csv; {out['seconds_total']} s", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""PyTorch CPU timing of the training step bench/train.c measures: forward of the plain-torch
reference Llama (tests/ref/make_model_fixtures.py), cross-entropy on next tokens, backward,
clip_grad_norm_, AdamW (decay on 2-D tensors). Prints `ms_per_step N` (median of the reps).
Run by bench/train, or by hand: /usr/bin/python3 bench/train_ref.py --hidden 256 ..."""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import make_model_fixtures as ref  # noqa: E402

ap = argparse.ArgumentParser()
for k, d in (("hidden", 256), ("layers", 4), ("heads", 4), ("kv-heads", 4), ("ffn", 688), ("vocab", 8192),
             ("batch", 4), ("seq", 256), ("reps", 3), ("threads", 2)):
    ap.add_argument("--" + k, type=int, default=d)
a = ap.parse_args()
torch.set_num_threads(a.threads)
c = ref.Cfg(dict(model_type="llama", hidden_size=a.hidden, intermediate_size=a.ffn, num_hidden_layers=a.layers,
                 num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, vocab_size=a.vocab))
g = torch.Generator().manual_seed(0)
P = {k: v.requires_grad_(True) for k, v in ref.random_params(c, g, std=0.02).items()}
params = list(P.values())
opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() == 2], "weight_decay": 0.1},
                         {"params": [p for p in params if p.dim() != 2], "weight_decay": 0.0}],
                        lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
ids = torch.randint(0, c.V, (a.batch, a.seq + 1), generator=g)
x, y = ids[:, :-1], ids[:, 1:]


def step():
    opt.zero_grad(set_to_none=False)
    logits = ref.forward(c, P, x)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c.V), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return float(loss)


step()  # warm-up: allocation, optimizer state
times = []
for _ in range(a.reps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
print(f"ms_per_step {1e3 * statistics.median(times):.2f}")

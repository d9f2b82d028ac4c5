#!/usr/bin/python3
"""PyTorch CPU timing of the same batched logits forward bench/forward.c measures, using the
plain-torch reference model of tests/ref/make_model_fixtures.py (with --experts, the Mixtral of
tests/ref/make_arch_fixtures.py: router, top-k, each expert over its tokens, index_add_ back, as
Hugging Face's MixtralSparseMoeBlock). Prints `tokens_per_s N`.
Run by bench/forward, or by hand: /usr/bin/python3 bench/forward_ref.py --hidden 512 ..."""
import argparse, os, sys, time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import make_model_fixtures as ref  # noqa: E402
import make_arch_fixtures as arch  # noqa: E402

ap = argparse.ArgumentParser()
for k, d in (("hidden", 512), ("layers", 6), ("heads", 8), ("kv-heads", 8), ("ffn", 1376), ("vocab", 16384),
             ("batch", 4), ("seq", 512), ("reps", 3), ("threads", 2), ("experts", 0), ("top", 2)):
    ap.add_argument("--" + k, type=int, default=d)
ap.add_argument("--train", action="store_true", help="time forward + autograd backward")
a = ap.parse_args()
torch.set_num_threads(a.threads)
d = dict(model_type="llama", hidden_size=a.hidden, intermediate_size=a.ffn, num_hidden_layers=a.layers,
         num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, vocab_size=a.vocab)
g = torch.Generator().manual_seed(0)
if a.experts:
    assert not a.train, "the mixture-of-experts reference is forward only"
    d.update(model_type="mixtral", num_local_experts=a.experts, num_experts_per_tok=a.top, sliding_window=None)
    c = arch.Cfg(d)
    P = arch.random_params(c, g, std=0.02)
    ref = arch  # its forward
else:
    c = ref.Cfg(d)
    P = ref.random_params(c, g, std=0.02)
ids = torch.randint(0, c.V, (a.batch, a.seq), generator=g)
best = 1e30
if a.train:
    P = {k: v.requires_grad_(True) for k, v in P.items()}
    R = 1e-4 * torch.randn(a.batch, a.seq, c.V, generator=g)
    for i in range(a.reps + 1):
        t0 = time.perf_counter()
        for v in P.values():
            v.grad = None
        (ref.forward(c, P, ids) * R).sum().backward()
        if i:
            best = min(best, time.perf_counter() - t0)
else:
    with torch.no_grad():
        ref.forward(c, P, ids)
        for _ in range(a.reps):
            t0 = time.perf_counter()
            ref.forward(c, P, ids)
            best = min(best, time.perf_counter() - t0)
print(f"seconds {best:.4f}")
print(f"tokens_per_s {a.batch * a.seq / best:.1f}")

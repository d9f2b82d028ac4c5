#!/usr/bin/python3
"""Reference values for the training engine (fc_loss, fc_optim), computed with plain PyTorch.

Run by hand:  /usr/bin/python3 tests/ref/make_train_fixtures.py
Writes tests/fixtures/train/{loss,optim}.json, read by tests/test_loss.c and tests/test_optim.c.

The losses are computed densely in float64 with autograd (a dense target distribution built by
scatter_add from the top-K entries), independently of the sparse C implementation. AdamW, the
clipping and the LambdaLR schedule are torch's own; the schedule lambdas follow transformers'
get_cosine_schedule_with_warmup / get_constant_schedule_with_warmup.
"""
import json
import math
import os

import torch

torch.manual_seed(1234)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "train")
os.makedirs(OUT, exist_ok=True)


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


# ---------------------------------------------------------------- losses
def loss_case(name, B, T, V, K, lam, extra_norm, with_fused):
    logits = (torch.randn(B, T, V, dtype=torch.float64) * 3.0).float()
    targets = torch.randint(0, V, (B, T))
    # mask some positions (padding, prompt tokens, last position)
    targets[0, 0] = -1
    targets[:, T - 1] = -1
    targets[1, 2] = -1
    ids = torch.zeros(B, T, K, dtype=torch.int64)
    lps = torch.zeros(B, T, K)
    for b in range(B):
        for t in range(T):
            ids[b, t] = torch.randperm(V)[:K]  # duplicate-free
            lps[b, t] = torch.randn(K) * 2.0 - 3.0
    ids[0, 1, 3] = ids[0, 1, 0]          # repeated ids: their mass adds up
    ids[0, 1, 7] = ids[0, 1, 0]
    ids[1, 1, 5:] = -1                   # empty slots
    ids[0, 3, 2] = int(targets[0, 3]) if targets[0, 3] >= 0 else 0
    ids[1, 4, :] = -1                    # no fused entries: one-hot on gold
    if targets[1, 4] < 0:
        targets[1, 4] = 3
    counted = int((targets >= 0).sum())
    norm = counted + extra_norm          # extra_norm > 0 mimics one micro-batch of several

    z = logits.double().clone().requires_grad_(True)
    logq = torch.log_softmax(z, dim=-1)
    mask = (targets >= 0)
    gold = targets.clamp(min=0)
    ce_pos = -logq.gather(-1, gold.unsqueeze(-1)).squeeze(-1)
    ce = (ce_pos * mask).sum() / norm
    if with_fused:
        valid = ids >= 0
        lp = lps.double().masked_fill(~valid, float("-inf"))
        p = torch.softmax(lp, dim=-1)
        p = torch.nan_to_num(p, nan=0.0)  # rows with no valid entry
        dense = torch.zeros(B, T, V, dtype=torch.float64)
        dense.scatter_add_(-1, ids.clamp(min=0), p * valid)
        empty = ~valid.any(-1)
        dense[empty] = torch.nn.functional.one_hot(gold[empty], V).double()
        fu_pos = -(dense * logq).sum(-1)
        fu = (fu_pos * mask).sum() / norm
        loss = lam * ce + (1 - lam) * fu
    else:
        fu = torch.tensor(0.0)
        loss = ce
    loss.backward()
    return {
        "name": name, "B": B, "T": T, "V": V, "K": K if with_fused else 0, "lambda": lam,
        "norm": norm, "logits": flat(logits), "targets": [int(x) for x in targets.reshape(-1)],
        "ids": [int(x) for x in ids.reshape(-1)], "logprobs": flat(lps),
        "loss": float(loss), "ce": float(ce), "fusion": float(fu), "counted": counted,
        "dlogits": flat(z.grad),
    }


cases = [
    loss_case("ce", 2, 6, 50, 10, 1.0, 0, False),
    loss_case("fusion", 2, 6, 50, 10, 0.9, 0, True),
    loss_case("fusion_lambda0_norm", 2, 6, 50, 10, 0.0, 5, True),
    loss_case("fusion_big_logits", 2, 6, 300, 10, 0.5, 0, True),
]
cases[3]["logits"] = [x * 40.0 for x in cases[3]["logits"]]  # recomputed below: stability
# the big-logits case: recompute with the scaled logits (|z| up to ~400: exp overflows naively)
def rescale(c):
    B, T, V, K = c["B"], c["T"], c["V"], c["K"]
    z = torch.tensor(c["logits"], dtype=torch.float32).reshape(B, T, V).double().requires_grad_(True)
    targets = torch.tensor(c["targets"]).reshape(B, T)
    ids = torch.tensor(c["ids"]).reshape(B, T, K)
    lps = torch.tensor(c["logprobs"]).reshape(B, T, K)
    logq = torch.log_softmax(z, dim=-1)
    mask = targets >= 0
    gold = targets.clamp(min=0)
    ce = (-logq.gather(-1, gold.unsqueeze(-1)).squeeze(-1) * mask).sum() / c["norm"]
    valid = ids >= 0
    p = torch.nan_to_num(torch.softmax(lps.double().masked_fill(~valid, float("-inf")), -1), nan=0.0)
    dense = torch.zeros(B, T, V, dtype=torch.float64)
    dense.scatter_add_(-1, ids.clamp(min=0), p * valid)
    empty = ~valid.any(-1)
    dense[empty] = torch.nn.functional.one_hot(gold[empty], V).double()
    fu = (-(dense * logq).sum(-1) * mask).sum() / c["norm"]
    loss = c["lambda"] * ce + (1 - c["lambda"]) * fu
    loss.backward()
    c.update(loss=float(loss), ce=float(ce), fusion=float(fu), dlogits=flat(z.grad))
rescale(cases[3])
with open(os.path.join(OUT, "loss.json"), "w") as f:
    json.dump({"cases": cases}, f)


# ---------------------------------------------------------------- optimizer + schedule
def cosine_lambda(warmup, total):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        progress = float(step - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
    return f


def constant_lambda(warmup):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1.0, warmup))
        return 1.0
    return f


sched_values = []
for kind, warmup, total in [("cosine", 3, 10), ("cosine", 0, 7), ("cosine", 1, 1), ("constant", 4, 10),
                            ("constant", 0, 5), ("cosine", 30, 1000)]:
    lam = cosine_lambda(warmup, total) if kind == "cosine" else constant_lambda(warmup)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    lrs = []
    for _ in range(min(total + 2, 40)):
        lrs.append(opt.param_groups[0]["lr"] / 2.0)
        opt.step()
        sch.step()
    sched_values.append({"kind": kind, "warmup": warmup, "total": total, "factors": lrs})

# parameter tensors in one flat buffer: W1 (4,3) 2-D, b1 (3) 1-D, W2 (2,5) 2-D, g (5) 1-D
shapes = [("w1", [4, 3]), ("b1", [3]), ("w2", [2, 5]), ("g", [5])]
params = [torch.nn.Parameter(torch.randn(*s)) for _, s in shapes]
init = [flat(p) for p in params]
lr, wd, b1, b2, eps, clip = 1e-2, 0.1, 0.9, 0.95, 1e-8, 1.0
steps, warmup = 5, 2
opt = torch.optim.AdamW([{"params": [params[0], params[2]], "weight_decay": wd},
                         {"params": [params[1], params[3]], "weight_decay": 0.0}],
                        lr=lr, betas=(b1, b2), eps=eps)
sch = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(warmup, steps))
traj, grads, lrs, norms = [], [], [], []
for step in range(steps):
    scale = 3.0 if step % 2 == 0 else 0.05  # even steps get clipped, odd steps not
    gs = [torch.randn(*s) * scale for _, s in shapes]
    for p, g in zip(params, gs):
        p.grad = g.clone()
    grads.append(sum((flat(g) for g in gs), []))
    norms.append(float(torch.nn.utils.clip_grad_norm_(params, clip)))
    lrs.append(opt.param_groups[0]["lr"])
    opt.step()
    sch.step()
    traj.append(sum((flat(p) for p in params), []))
state = [opt.state[p] for p in params]
with open(os.path.join(OUT, "optim.json"), "w") as f:
    json.dump({
        "tensors": [{"name": n, "shape": s} for n, s in shapes],
        "init": sum(init, []), "lr": lr, "weight_decay": wd, "beta1": b1, "beta2": b2,
        "eps": eps, "clip": clip, "warmup": warmup, "steps": steps,
        "grads": grads, "norms": norms, "lrs": lrs, "params": traj,
        "m": sum((flat(s["exp_avg"]) for s in state), []),
        "v": sum((flat(s["exp_avg_sq"]) for s in state), []),
        "schedules": sched_values,
    }, f)
print("wrote", OUT)


# ---------------------------------------------------------------- whole training steps on a model
# Three optimizer steps of fc_train on tests/fixtures/model/llama_gqa (written by
# make_model_fixtures.py, whose plain-torch Llama is reused here), replayed in PyTorch: the same
# rows per step (B=2 rows per micro-batch, G=2 micro-batches, right padding, truncation at T),
# loss averaged over all counted tokens of the step, clip_grad_norm_, AdamW with decay on 2-D
# tensors, LambdaLR cosine with warm-up. Once with gold CE only, once with fused top-K targets.
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_fixtures as mm  # noqa: E402
from st_write import st_write  # noqa: E402

MODEL = os.path.join(OUT, "..", "model", "llama_gqa")


def st_read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in hdr.items():
        if name == "__metadata__":
            continue
        assert h["dtype"] == "F32"
        a, b = h["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(h["shape"]).clone()
    return out


def train_case(name, fused, lam):
    with open(os.path.join(MODEL, "config.json")) as f:
        cfgd = json.load(f)
    c = mm.Cfg(cfgd)
    P = {k: v.requires_grad_(True) for k, v in st_read(os.path.join(MODEL, "model.safetensors")).items()}
    rnd = random.Random(7)
    lines = [[rnd.randrange(c.V) for _ in range(n)] for n in (5, 12, 3, 9, 7, 14, 4, 8, 6, 10)]
    K = 4
    tg = []  # per line, per position: (ids, logprobs)
    for ln in lines:
        per = []
        for _ in ln:
            ids = rnd.sample(range(c.V), K)
            if rnd.random() < 0.3:
                ids[3] = -1
            per.append((ids, [rnd.uniform(-6, -0.5) for _ in range(K)]))
        tg.append(per)
    B, G, T, steps = 2, 2, 10, 3
    lr, wd, b1, b2, eps, clip, warmup = 1e-2, 0.1, 0.9, 0.95, 1e-6, 1.0, 1
    names = [n for n, _ in mm.param_shapes(c)]
    decay = [P[n] for n in names if P[n].dim() == 2]
    nodecay = [P[n] for n in names if P[n].dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=lr, betas=(b1, b2), eps=eps)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(warmup, steps))
    losses, norms = [], []
    for step in range(steps):
        first = step * B * G
        micro = [[(first + g * B + i) % len(lines) for i in range(B)] for g in range(G)]
        counted = sum(min(len(lines[r]), T) - 1 for mbr in micro for r in mbr)
        opt.zero_grad()
        total = 0.0
        for mbr in micro:
            rows = [lines[r][:T] for r in mbr]
            Tb = max(len(r) for r in rows)
            ids = torch.zeros(B, Tb, dtype=torch.int64)
            for i, r in enumerate(rows):
                ids[i, :len(r)] = torch.tensor(r)
            logq = torch.log_softmax(mm.forward(c, P, ids).double(), dim=-1)
            loss = torch.zeros((), dtype=torch.float64)
            for i, r in enumerate(rows):
                for t in range(len(r) - 1):
                    ce = -logq[i, t, r[t + 1]]
                    if fused:
                        tid, tlp = tg[mbr[i]][t]
                        keep = [k for k in range(K) if tid[k] >= 0]
                        p = torch.softmax(torch.tensor([tlp[k] for k in keep], dtype=torch.float64), 0)
                        fu = -sum(p[j] * logq[i, t, tid[k]] for j, k in enumerate(keep))
                        loss = loss + lam * ce + (1 - lam) * fu
                    else:
                        loss = loss + ce
            loss = loss / counted
            loss.backward()
            total += float(loss)
        norms.append(float(torch.nn.utils.clip_grad_norm_([P[n] for n in names], clip)))
        opt.step()
        sch.step()
        losses.append(total)
    with open(os.path.join(OUT, "train_data.jsonl"), "w") as f:
        for ln in lines:
            f.write(json.dumps({"input_ids": ln}) + "\n")
    with open(os.path.join(OUT, "train_targets.json"), "w") as f:
        json.dump({"K": K, "lines": [{"ids": [i for ids, _ in per for i in ids],
                                      "logprobs": [x for _, lp in per for x in lp]} for per in tg]}, f)
    st_write(os.path.join(OUT, name + ".ref.safetensors"), {n: P[n].detach() for n in names},
                {"losses": json.dumps(losses), "norms": json.dumps(norms),
                 "options": json.dumps(dict(B=B, G=G, T=T, steps=steps, lr=lr, wd=wd, beta1=b1, beta2=b2,
                                            eps=eps, clip=clip, warmup=warmup, K=K, **{"lambda": lam}))})
    print(name, "losses", losses, "norms", norms)


train_case("adamw3_ce", False, 1.0)
train_case("adamw3_fusion", True, 0.7)

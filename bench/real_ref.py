#!/usr/bin/python3
"""PyTorch CPU on what bench/real.c measures: the same bf16 safetensors model (loaded into f32,
as a user of torch 1.13 on CPU would), the same batches (dumped by bench/real into the scratch
folder), the plain-torch reference Llama/Qwen2 of tests/ref/make_model_fixtures.py.
  --logits        load seconds, tokens/s of top-10 + gold log-prob on the chat batches and on
                  the 2,048-token rows (median of --reps)
  --train BxT     median seconds of a training step (forward, cross-entropy, backward,
                  clip_grad_norm_, AdamW) on the dumped B x T batches, and the first loss
  --checkpoint    with --train: each layer under torch.utils.checkpoint (only its input kept,
                  recomputed in backward), as the engine's --checkpoint-activations
Prints "key value" lines, and rss_mb (this process's peak RSS)."""
import argparse
import json
import os
import resource
import statistics
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import make_model_fixtures as ref  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--scratch", required=True)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--logits", action="store_true")
ap.add_argument("--train")
ap.add_argument("--checkpoint", action="store_true")
a = ap.parse_args()
torch.set_num_threads(a.threads)


def load(d):
    """safetensors (bf16, f16 or f32) into f32 tensors, with json + numpy."""
    with open(os.path.join(d, "config.json")) as f:
        c = ref.Cfg(json.load(f))
    P = {}
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        base = 8 + n
        for name, t in hdr.items():
            if name == "__metadata__":
                continue
            lo, hi = t["data_offsets"]
            f.seek(base + lo)
            raw = np.frombuffer(f.read(hi - lo), dtype={"BF16": np.uint16, "F16": np.float16, "F32": np.float32}[t["dtype"]])
            if t["dtype"] == "BF16":
                x = torch.from_numpy((raw.astype(np.uint32) << 16).view(np.float32))
            else:
                x = torch.from_numpy(raw.astype(np.float32))
            P[name] = x.reshape(t["shape"])
    return c, P


def batches(path):
    out = []
    with open(path, "rb") as f:
        while True:
            h = f.read(12)
            if len(h) < 12:
                break
            B, T, tok = struct.unpack("<3i", h)
            ids = torch.from_numpy(np.frombuffer(f.read(4 * B * T), dtype=np.int32).astype(np.int64)).view(B, T)
            tg = torch.from_numpy(np.frombuffer(f.read(4 * B * T), dtype=np.int32).astype(np.int64)).view(B, T)
            out.append((ids, tg, tok))
    return out


t0 = time.perf_counter()
c, P = load(a.model)
print(f"load_s {time.perf_counter() - t0:.4f}")
if a.logits:
    with torch.no_grad():
        for key in ("chat_tok_s", "long_tok_s"):
            bs = batches(os.path.join(a.scratch, key + ".ids"))
            times, tokens = [], sum(b[2] for b in bs)
            for _ in range(a.reps):
                t0 = time.perf_counter()
                for ids, tg, _ in bs:
                    lp = torch.log_softmax(ref.forward(c, P, ids), dim=-1)
                    lp.topk(10, dim=-1)
                    lp.gather(-1, tg.clamp(min=0)[..., None])
                    del lp
                times.append(time.perf_counter() - t0)
            print(f"{key} {tokens / statistics.median(times):.2f}")
if a.train:
    bs = batches(os.path.join(a.scratch, f"train_{a.train}.ids"))
    P = {k: v.requires_grad_(True) for k, v in P.items()}
    params = list(P.values())
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    times = []
    for i, (ids, tg, _) in enumerate(bs):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        logits = ref.forward(c, P, ids, checkpoint=a.checkpoint)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c.V), tg.reshape(-1), ignore_index=-1)
        del logits
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
        else:
            print(f"loss0 {float(loss):.6f}")
    if times:
        print(f"step_s {statistics.median(times):.4f}")
print(f"rss_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")

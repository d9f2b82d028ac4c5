#!/usr/bin/python3
"""Reference fixtures for tests/test_arch.c: small random models of the source families the
engine runs forward-only (mixtral, internlm2, gemma, gemma2, phi3), written as Hugging Face
directories, with what an independent PyTorch forward says about them (logits, top-K of
log-softmax).

No `transformers` here: the forward below is written from the families' definitions
(modeling_mixtral, InternLM2's modeling_internlm2, modeling_gemma, modeling_gemma2,
modeling_phi3) with plain torch ops:
  mixtral    Mistral attention; MoE: router softmax in f32 over all experts, top-k, renormalised,
             experts silu(w1 x) * w3 x -> w2, weighted and summed with index_add_ per expert
  internlm2  wqkv viewed (.., NKV, rep + 2, HD): q = the first rep slots, k = slot -2, v = -1;
             RoPE "linear" divides positions, "dynamic" raises the base when T > max positions
  gemma      embeddings * sqrt(hidden) (as an f32 tensor), RMSNorm * (1 + w), GELU (tanh) gate
  gemma2     + post-attention / pre- and post-feed-forward norms, scores * query_pre_attn_scalar^-1/2
             soft-capped cap * tanh(s / cap), final logits soft-capped, even layers windowed
  phi3       qkv_proj = [q | k | v], gate_up_proj = [gate | up], partial rotary dims, longrope

Run by hand: /usr/bin/python3 tests/ref/make_arch_fixtures.py tests/fixtures/arch [NAME...]
Also imported by bench/forward_ref.py for the PyTorch timing of the MoE forward."""
import json, math, os, sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_fixtures import rotate_half  # noqa: E402
from st_write import st_write  # noqa: E402


class Cfg:
    def __init__(self, d):
        self.d = d
        self.type = t = d["model_type"]
        self.C, self.F, self.L = d["hidden_size"], d["intermediate_size"], d["num_hidden_layers"]
        self.NH = d["num_attention_heads"]
        self.NKV = d.get("num_key_value_heads", self.NH)
        self.HD = d.get("head_dim", self.C // self.NH)
        self.V = d["vocab_size"]
        self.theta = d.get("rope_theta", 10000.0)
        self.eps = d.get("rms_norm_eps", 1e-6)
        self.tied = d.get("tie_word_embeddings", t.startswith("gemma"))
        self.bias = d.get("bias", True) if t == "internlm2" else d.get("attention_bias", False)
        self.E = d.get("num_local_experts", 8) if t == "mixtral" else 0
        self.k = d.get("num_experts_per_tok", 2)
        self.rd = int(self.HD * d.get("partial_rotary_factor", 1.0)) if t == "phi3" else self.HD
        self.rope_scaling = d.get("rope_scaling")
        self.maxpos = d.get("max_position_embeddings", 2048)
        if t == "gemma2":
            sw = d.get("sliding_window", 4096)
            types = d.get("layer_types") or [
                "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(self.L)]
            self.windows = [sw if x == "sliding_attention" else None for x in types]
        elif t in ("mixtral", "phi3"):
            self.windows = [d.get("sliding_window")] * self.L
        else:
            self.windows = [None] * self.L


def param_shapes(c):
    """HF names and shapes, in the order the C engine lays them out."""
    t, C, F, V = c.type, c.C, c.F, c.V
    q, kv = c.NH * c.HD, c.NKV * c.HD
    p = [("model.tok_embeddings.weight" if t == "internlm2" else "model.embed_tokens.weight", (V, C))]
    for l in range(c.L):
        pre = f"model.layers.{l}."
        if t == "internlm2":
            p.append((pre + "attention_norm.weight", (C,)))
            p.append((pre + "attention.wqkv.weight", (q + 2 * kv, C)))
            if c.bias:
                p.append((pre + "attention.wqkv.bias", (q + 2 * kv,)))
            p.append((pre + "attention.wo.weight", (C, q)))
            if c.bias:
                p.append((pre + "attention.wo.bias", (C,)))
            p.append((pre + "ffn_norm.weight", (C,)))
            p += [(pre + "feed_forward.w1.weight", (F, C)), (pre + "feed_forward.w3.weight", (F, C)),
                  (pre + "feed_forward.w2.weight", (C, F))]
            continue
        p.append((pre + "input_layernorm.weight", (C,)))
        if t == "phi3":
            p.append((pre + "self_attn.qkv_proj.weight", (q + 2 * kv, C)))
        else:
            for n, o in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
                p.append((pre + f"self_attn.{n}.weight", (o, C)))
                if c.bias:
                    p.append((pre + f"self_attn.{n}.bias", (o,)))
        p.append((pre + "self_attn.o_proj.weight", (C, q)))
        if c.bias:
            p.append((pre + "self_attn.o_proj.bias", (C,)))
        if t == "gemma2":
            p += [(pre + "post_attention_layernorm.weight", (C,)), (pre + "pre_feedforward_layernorm.weight", (C,)),
                  (pre + "post_feedforward_layernorm.weight", (C,))]
        else:
            p.append((pre + "post_attention_layernorm.weight", (C,)))
        if t == "mixtral":
            p.append((pre + "block_sparse_moe.gate.weight", (c.E, C)))
            for e in range(c.E):
                x = pre + f"block_sparse_moe.experts.{e}."
                p += [(x + "w1.weight", (F, C)), (x + "w2.weight", (C, F)), (x + "w3.weight", (F, C))]
        elif t == "phi3":
            p += [(pre + "mlp.gate_up_proj.weight", (2 * F, C)), (pre + "mlp.down_proj.weight", (C, F))]
        else:
            p += [(pre + "mlp.gate_proj.weight", (F, C)), (pre + "mlp.up_proj.weight", (F, C)),
                  (pre + "mlp.down_proj.weight", (C, F))]
    p.append(("model.norm.weight", (C,)))
    if not c.tied:
        p.append(("output.weight" if t == "internlm2" else "lm_head.weight", (V, C)))
    return p


def rope_cos_sin(c, T):
    dim, base = c.rd, c.theta
    rs = c.rope_scaling or {}
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "dynamic" and T > c.maxpos:  # InternLM2DynamicNTKScalingRotaryEmbedding
        f = rs["factor"]
        base = base * ((f * T / c.maxpos) - (f - 1)) ** (dim / (dim - 2))
    inv = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    mscale = 1.0
    if kind in ("longrope", "su"):  # Phi3: _compute_longrope_parameters + the dynamic switch on T
        orig = c.d.get("original_max_position_embeddings")
        factor = c.maxpos / orig if orig else rs["factor"]
        orig = orig or c.maxpos
        mscale = rs.get("attention_factor") or (1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(orig)))
        ext = torch.tensor(rs["long_factor"] if T > orig else rs["short_factor"], dtype=torch.float32)
        inv = 1.0 / (ext * base ** (torch.arange(0, dim, 2).float() / dim))
    t = torch.arange(T).float()
    if kind == "linear":
        if c.type == "internlm2":
            t = t / rs["factor"]  # InternLM2LinearScalingRotaryEmbedding scales positions
        else:
            inv = inv / rs["factor"]
    freqs = torch.outer(t, inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * mscale)[None, None], (emb.sin() * mscale)[None, None]


def rope(x, cos, sin, rd):
    xr, xp = x[..., :rd], x[..., rd:]
    return torch.cat((xr * cos + rotate_half(xr) * sin, xp), dim=-1)


def rmsnorm(c, x, w):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c.eps)
    return y * (1.0 + w) if c.type.startswith("gemma") else w * y


def act(c, x):
    if c.type.startswith("gemma"):
        a = c.d.get("hidden_activation", "gelu_pytorch_tanh")
        return torch.nn.functional.gelu(x, approximate="tanh" if a != "gelu" else "none")
    return torch.nn.functional.silu(x)


def moe(c, P, pre, h):
    """MixtralSparseMoeBlock on h (B,T,C)."""
    B, T, C = h.shape
    x = h.reshape(-1, C)
    logits = x @ P[pre + "block_sparse_moe.gate.weight"].t()
    w = torch.softmax(logits, dim=1, dtype=torch.float)
    w, sel = torch.topk(w, c.k, dim=-1)
    w = w / w.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(x)
    for e in range(c.E):
        idx, slot = torch.where(sel == e)
        if idx.numel() == 0:
            continue
        cur = x[idx]
        ex = pre + f"block_sparse_moe.experts.{e}."
        y = (torch.nn.functional.silu(cur @ P[ex + "w1.weight"].t()) * (cur @ P[ex + "w3.weight"].t())) \
            @ P[ex + "w2.weight"].t()
        out.index_add_(0, idx, y * w[idx, slot, None])
    return out.reshape(B, T, C), sel.reshape(B, T, c.k)


def forward(c, P, ids, want_routes=False):
    """ids (B,T) int64 -> logits (B,T,V) (and the experts chosen per layer for mixtral)."""
    B, T = ids.shape
    t = c.type
    emb = P["model.tok_embeddings.weight" if t == "internlm2" else "model.embed_tokens.weight"]
    x = emb[ids]
    if t.startswith("gemma"):
        x = x * torch.tensor(c.C ** 0.5, dtype=x.dtype)
    cos, sin = rope_cos_sin(c, T)
    rep = c.NH // c.NKV
    routes = []

    def lin(h, name):
        y = h @ P[name + ".weight"].t()
        return y + P[name + ".bias"] if name + ".bias" in P else y

    for l in range(c.L):
        pre = f"model.layers.{l}."
        if t == "internlm2":
            h = rmsnorm(c, x, P[pre + "attention_norm.weight"])
            qkv = lin(h, pre + "attention.wqkv").view(B, T, c.NKV, rep + 2, c.HD)
            q = qkv[..., :rep, :].reshape(B, T, c.NH, c.HD).transpose(1, 2)
            k = qkv[..., -2, :].transpose(1, 2)
            v = qkv[..., -1, :].transpose(1, 2)
        else:
            h = rmsnorm(c, x, P[pre + "input_layernorm.weight"])
            if t == "phi3":
                qkv = lin(h, pre + "self_attn.qkv_proj")
                qd, kvd = c.NH * c.HD, c.NKV * c.HD
                q, k, v = qkv[..., :qd], qkv[..., qd:qd + kvd], qkv[..., qd + kvd:]
            else:
                q, k, v = (lin(h, pre + f"self_attn.{n}_proj") for n in "qkv")
            q = q.reshape(B, T, c.NH, c.HD).transpose(1, 2)
            k = k.reshape(B, T, c.NKV, c.HD).transpose(1, 2)
            v = v.reshape(B, T, c.NKV, c.HD).transpose(1, 2)
        q, k = rope(q, cos, sin, c.rd), rope(k, cos, sin, c.rd)
        k = k[:, :, None].expand(B, c.NKV, rep, T, c.HD).reshape(B, c.NH, T, c.HD)
        v = v[:, :, None].expand(B, c.NKV, rep, T, c.HD).reshape(B, c.NH, T, c.HD)
        scale = c.d["query_pre_attn_scalar"] ** -0.5 if t == "gemma2" else c.HD ** -0.5
        s = (q @ k.transpose(2, 3)) * scale
        if t == "gemma2" and c.d.get("attn_logit_softcapping"):
            cap = c.d["attn_logit_softcapping"]
            s = torch.tanh(s / cap) * cap
        mask = torch.full((T, T), float("-inf")).triu(1)
        if c.windows[l] is not None:  # keys j with i - W < j <= i
            mask = mask + torch.full((T, T), float("-inf")).tril(-c.windows[l])
        a = (torch.softmax((s + mask).float(), dim=-1) @ v).transpose(1, 2).reshape(B, T, c.NH * c.HD)
        if t == "internlm2":
            x = x + lin(a, pre + "attention.wo")
            h = rmsnorm(c, x, P[pre + "ffn_norm.weight"])
            x = x + lin(act(c, lin(h, pre + "feed_forward.w1")) * lin(h, pre + "feed_forward.w3"),
                        pre + "feed_forward.w2")
            continue
        o = lin(a, pre + "self_attn.o_proj")
        if t == "gemma2":
            x = x + rmsnorm(c, o, P[pre + "post_attention_layernorm.weight"])
            h = rmsnorm(c, x, P[pre + "pre_feedforward_layernorm.weight"])
        else:
            x = x + o
            h = rmsnorm(c, x, P[pre + "post_attention_layernorm.weight"])
        if t == "mixtral":
            y, sel = moe(c, P, pre, h)
            routes.append(sel)
        elif t == "phi3":
            gate, up = lin(h, pre + "mlp.gate_up_proj").chunk(2, dim=-1)
            y = lin(up * act(c, gate), pre + "mlp.down_proj")
        else:
            y = lin(act(c, lin(h, pre + "mlp.gate_proj")) * lin(h, pre + "mlp.up_proj"), pre + "mlp.down_proj")
        if t == "gemma2":
            y = rmsnorm(c, y, P[pre + "post_feedforward_layernorm.weight"])
        x = x + y
    x = rmsnorm(c, x, P["model.norm.weight"])
    W = emb if c.tied else P["output.weight" if t == "internlm2" else "lm_head.weight"]
    logits = x @ W.t()
    if t == "gemma2" and c.d.get("final_logit_softcapping"):
        cap = c.d["final_logit_softcapping"]
        logits = torch.tanh(logits / cap) * cap
    return (logits, routes) if want_routes else logits


def random_params(c, gen, std):
    P = {}
    for name, shape in param_shapes(c):
        if name.endswith("norm.weight"):
            # Gemma stores w for a scale of 1 + w.
            P[name] = (0.0 if c.type.startswith("gemma") else 1.0) + 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith(".bias"):
            P[name] = 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith("embeddings.weight") or name.endswith("embed_tokens.weight"):
            P[name] = (0.3 if c.type.startswith("gemma") else 1.0) * torch.randn(shape, generator=gen)
        elif name.endswith("block_sparse_moe.gate.weight"):
            P[name] = torch.randn(shape, generator=gen)  # decisive, varied routing
        else:
            P[name] = std * torch.randn(shape, generator=gen)
    return P


BASE = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, rms_norm_eps=1e-5, max_position_embeddings=256,
            bos_token_id=1, eos_token_id=2)

VARIANTS = {
    # 4 experts, top-2, router choices that differ from token to token (checked below).
    "mixtral_moe": dict(BASE, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2,
                        rope_theta=1e6, sliding_window=None, dtype=torch.float32),
    # 3 experts, top-2, a 5-token window, bf16 file.
    "mixtral_swa_bf16": dict(BASE, model_type="mixtral", num_local_experts=3, num_experts_per_tok=2,
                             sliding_window=5, dtype=torch.bfloat16),
    # Grouped KV heads (4 query heads over 2 KV heads in the packed wqkv), biases, dynamic NTK
    # RoPE that switches on past max_position_embeddings 8 (the 12-token rows exceed it).
    "internlm2_gqa_dynamic": dict(BASE, model_type="internlm2", bias=True, max_position_embeddings=8,
                                  rope_scaling={"type": "dynamic", "factor": 2.0}, dtype=torch.float32),
    # One KV head for 4 query heads, no biases, linear RoPE scaling, bf16 file.
    "internlm2_mqa_linear_bf16": dict(BASE, model_type="internlm2", bias=False, num_key_value_heads=1,
                                      rope_scaling={"type": "linear", "factor": 2.0}, dtype=torch.bfloat16),
    # Gemma: multi-query, head_dim 16 (heads * head_dim != hidden), tied, tanh GELU.
    "gemma_mqa": dict(BASE, model_type="gemma", num_key_value_heads=1, head_dim=16,
                      hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, dtype=torch.float32),
    # Gemma2: 3 layers (0 and 2 windowed to 4 positions), caps small enough to bite.
    "gemma2_softcap": dict(BASE, model_type="gemma2", num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=24,
                           attn_logit_softcapping=2.0, final_logit_softcapping=3.0, sliding_window=4,
                           hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, dtype=torch.float32,
                           long_T=150),
    # Phi3: packed projections, half the head dims rotary, a 5-token window.
    "phi3_partial": dict(BASE, model_type="phi3", partial_rotary_factor=0.5, sliding_window=5,
                         dtype=torch.float32),
    # Phi3 longrope: the 12-token rows pass original_max_position_embeddings 8 (long factors),
    # the 6-token sequence does not (short factors); attention factor from 64 / 8.
    "phi3_longrope": dict(BASE, model_type="phi3", max_position_embeddings=64, original_max_position_embeddings=8,
                          rope_scaling={"type": "longrope", "short_factor": [1.0, 1.3, 2.1, 3.7],
                                        "long_factor": [1.1, 2.5, 6.0, 17.0]},
                          dtype=torch.float32, long_T=6),
}

ARCHS = {"mixtral": "MixtralForCausalLM", "internlm2": "InternLM2ForCausalLM", "gemma": "GemmaForCausalLM",
         "gemma2": "Gemma2ForCausalLM", "phi3": "Phi3ForCausalLM"}


def make(out_root, name, spec, seed):
    spec = dict(spec)
    dtype = spec.pop("dtype")
    long_T = spec.pop("long_T", 0)
    d = dict(spec)
    d["torch_dtype"] = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]
    d["architectures"] = [ARCHS[d["model_type"]]]
    if d["model_type"] != "gemma" and d["model_type"] != "gemma2":
        d["hidden_act"] = "silu"
    c = Cfg(d)
    gen = torch.Generator().manual_seed(seed)
    P = random_params(c, gen, std=0.3)
    P = {k: v.to(dtype).float() for k, v in P.items()}  # the model is what the file holds
    mdir = os.path.join(out_root, name)
    os.makedirs(mdir, exist_ok=True)
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(d, f, indent=2)
    st_write(os.path.join(mdir, "model.safetensors"), {k: v.to(dtype) for k, v in P.items()}, {"format": "pt"})
    B, T, K = 2, 12, 5
    ids = torch.randint(0, c.V, (B, T), generator=gen)
    with torch.no_grad():
        logits, routes = forward(c, P, ids, want_routes=True)
    if c.type == "mixtral":
        # The point of the fixture: experts chosen differ between tokens in every layer.
        for r in routes:
            assert len({tuple(sorted(x)) for x in r.reshape(-1, c.k).tolist()}) > 1, "one routing for all"
    lp = torch.log_softmax(logits, dim=-1)
    topv, topi = torch.topk(lp, K, dim=-1)
    ref = {"ids": ids.to(torch.int32), "logits": logits, "topk_ids": topi.to(torch.int32), "topk_logprobs": topv}
    for l, r in enumerate(routes):
        ref[f"routes.{l}"] = r.to(torch.int32)
    if long_T:
        gl = torch.Generator().manual_seed(seed + 7)
        ids_l = torch.randint(0, c.V, (1, long_T), generator=gl)
        with torch.no_grad():
            ref["long.ids"] = ids_l.to(torch.int32)
            ref["long.logits"] = forward(c, P, ids_l)
    st_write(os.path.join(out_root, name + ".ref.safetensors"), ref, {"K": str(K)})
    print(name, "params", sum(v.numel() for v in P.values()))


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/arch"
    only = sys.argv[2:]
    for n in only:
        assert n in VARIANTS, f"unknown variant {n}"
    for i, (name, spec) in enumerate(VARIANTS.items()):
        if not only or name in only:
            make(out, name, spec, 2000 + i)

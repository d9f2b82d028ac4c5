#!/usr/bin/python3
"""Reference fixtures for tests/test_model.c: small random Llama/Qwen2 models in Hugging Face
layout and what an independent PyTorch implementation says about them (logits, top-K of
log-softmax, gradients of every parameter by autograd, greedy generation).

The `transformers` library is not available here, so the forward below is written from the
Hugging Face modeling_llama / modeling_qwen2 definitions with plain torch ops: RMSNorm in f32,
rotate_half RoPE (with linear and llama3 rope_scaling), repeat_kv for grouped-query attention,
causal softmax attention (with Mistral's / Qwen2's sliding window where the config sets one),
SwiGLU MLP, tied or separate LM head.

Run by hand: /usr/bin/python3 tests/ref/make_model_fixtures.py tests/fixtures/model [NAME...]
(NAMEs: only those variants; their seeds do not depend on which others are made).
It is also imported by bench/forward_ref.py for the PyTorch timing."""
import json, math, os, sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_write import st_write  # noqa: E402


# ---------------------------------------------------------------- the reference model

class Cfg:
    def __init__(self, d):
        self.d = d
        self.type = d["model_type"]
        self.C = d["hidden_size"]
        self.F = d["intermediate_size"]
        self.L = d["num_hidden_layers"]
        self.NH = d["num_attention_heads"]
        self.NKV = d.get("num_key_value_heads", self.NH)
        self.HD = d.get("head_dim", self.C // self.NH)
        self.V = d["vocab_size"]
        self.theta = d.get("rope_theta", 10000.0)
        self.eps = d.get("rms_norm_eps", 1e-6)
        self.tied = d.get("tie_word_embeddings", False)
        ab = d.get("attention_bias", False)
        self.qkv_bias = True if self.type == "qwen2" else ab
        self.o_bias = False if self.type == "qwen2" else ab
        self.mlp_bias = d.get("mlp_bias", False)
        self.rope_scaling = d.get("rope_scaling")
        self.windows = layer_windows(d, self.L)


def layer_windows(d, L):
    """Sliding window W of each layer (None: full causal attention), by Hugging Face's rules:
    MistralConfig defaults sliding_window to 4096 and windows every layer when it is set;
    Qwen2Config drops the window unless use_sliding_window, then takes layer_types or windows
    the layers >= max_window_layers (default 28); Llama has none."""
    t = d["model_type"]
    if t == "mistral":
        return [d.get("sliding_window", 4096)] * L
    if t == "qwen2":
        w = d.get("sliding_window", 4096) if d.get("use_sliding_window", False) else None
        types = d.get("layer_types") or [
            "sliding_attention" if w is not None and i >= d.get("max_window_layers", 28) else "full_attention"
            for i in range(L)]
        assert w is not None or "sliding_attention" not in types
        return [w if types[i] == "sliding_attention" else None for i in range(L)]
    return [None] * L


def param_shapes(c):
    """HF names and shapes, in the order the C engine lays them out."""
    p = [("model.embed_tokens.weight", (c.V, c.C))]
    q, kv = c.NH * c.HD, c.NKV * c.HD
    for l in range(c.L):
        pre = f"model.layers.{l}."
        p.append((pre + "input_layernorm.weight", (c.C,)))
        for n, o in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
            p.append((pre + f"self_attn.{n}.weight", (o, c.C)))
            if c.qkv_bias:
                p.append((pre + f"self_attn.{n}.bias", (o,)))
        p.append((pre + "self_attn.o_proj.weight", (c.C, q)))
        if c.o_bias:
            p.append((pre + "self_attn.o_proj.bias", (c.C,)))
        p.append((pre + "post_attention_layernorm.weight", (c.C,)))
        for n, (o, i) in (("gate_proj", (c.F, c.C)), ("up_proj", (c.F, c.C)), ("down_proj", (c.C, c.F))):
            p.append((pre + f"mlp.{n}.weight", (o, i)))
            if c.mlp_bias:
                p.append((pre + f"mlp.{n}.bias", (o,)))
    p.append(("model.norm.weight", (c.C,)))
    if not c.tied:
        p.append(("lm_head.weight", (c.V, c.C)))
    return p


def inv_freq(c):
    # As HF's _compute_default_rope_parameters / _compute_llama3_parameters, in f32.
    inv = 1.0 / (c.theta ** (torch.arange(0, c.HD, 2, dtype=torch.int64).float() / c.HD))
    rs = c.rope_scaling
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "linear":
            inv = inv / rs["factor"]
        elif kind == "llama3":
            factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
            old = rs["original_max_position_embeddings"]
            lo_wl, hi_wl = old / lo, old / hi
            wl = 2 * math.pi / inv
            il = torch.where(wl > lo_wl, inv / factor, inv)
            smooth = (old / wl - lo) / (hi - lo)
            smoothed = (1 - smooth) * il / factor + smooth * il
            medium = ~(wl < hi_wl) * ~(wl > lo_wl)
            inv = torch.where(medium, smoothed, il)
    return inv


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rmsnorm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def forward(c, P, ids, checkpoint=False):
    """ids (B,T) int64 -> logits (B,T,V). P: dict name -> f32 tensor. checkpoint: each decoder
    layer a checkpointed function of the residual stream (torch.utils.checkpoint; the same
    operations in the same order, so the same numbers)."""
    B, T = ids.shape
    x = P["model.embed_tokens.weight"][ids]
    pos = torch.arange(T).float()
    freqs = torch.outer(pos, inv_freq(c))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    mask = torch.full((T, T), float("-inf")).triu(1)
    # masking_utils: sliding_window_overlay keeps kv_idx > q_idx - W, so j <= i - W is masked.
    masks = [mask if W is None else mask + torch.full((T, T), float("-inf")).tril(-W) for W in c.windows]
    rep = c.NH // c.NKV

    def lin(h, name):
        y = h @ P[name + ".weight"].t()
        if name + ".bias" in P:
            y = y + P[name + ".bias"]
        return y

    def layer(x, l):
        pre = f"model.layers.{l}."
        h = rmsnorm(x, P[pre + "input_layernorm.weight"], c.eps)
        q = lin(h, pre + "self_attn.q_proj").view(B, T, c.NH, c.HD).transpose(1, 2)
        k = lin(h, pre + "self_attn.k_proj").view(B, T, c.NKV, c.HD).transpose(1, 2)
        v = lin(h, pre + "self_attn.v_proj").view(B, T, c.NKV, c.HD).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # repeat_kv: (B, NKV, T, HD) -> (B, NKV*rep, T, HD), kv head j serves q heads j*rep..
        k = k[:, :, None].expand(B, c.NKV, rep, T, c.HD).reshape(B, c.NH, T, c.HD)
        v = v[:, :, None].expand(B, c.NKV, rep, T, c.HD).reshape(B, c.NH, T, c.HD)
        s = q @ k.transpose(2, 3) / math.sqrt(c.HD) + masks[l]
        a = torch.softmax(s.float(), dim=-1) @ v
        a = a.transpose(1, 2).reshape(B, T, c.NH * c.HD)
        x = x + lin(a, pre + "self_attn.o_proj")
        h = rmsnorm(x, P[pre + "post_attention_layernorm.weight"], c.eps)
        g = lin(h, pre + "mlp.gate_proj")
        u = lin(h, pre + "mlp.up_proj")
        return x + lin(torch.nn.functional.silu(g) * u, pre + "mlp.down_proj")

    for l in range(c.L):
        if checkpoint:
            import torch.utils.checkpoint as cp
            x = cp.checkpoint(layer, x, l)
        else:
            x = layer(x, l)
    x = rmsnorm(x, P["model.norm.weight"], c.eps)
    W = P["model.embed_tokens.weight"] if c.tied else P["lm_head.weight"]
    return x @ W.t()


def random_params(c, gen, std):
    P = {}
    for name, shape in param_shapes(c):
        if name.endswith("norm.weight"):
            P[name] = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith(".bias"):
            P[name] = 0.2 * torch.randn(shape, generator=gen)
        elif name == "model.embed_tokens.weight":
            P[name] = torch.randn(shape, generator=gen)
        else:
            P[name] = std * torch.randn(shape, generator=gen)
    return P


def greedy(c, P, prompt, max_new, eos):
    seq = list(prompt)
    out = []
    for _ in range(max_new):
        with torch.no_grad():
            lg = forward(c, P, torch.tensor([seq]))[0, -1]
        top2 = torch.topk(lg, 2).values
        # The C engine sums in another order: a near tie would make the test flaky.
        assert top2[0] - top2[1] > 1e-3 * top2.abs().max(), "near tie in greedy reference"
        nxt = int(lg.argmax())
        out.append(nxt)
        seq.append(nxt)
        if nxt == eos:
            break
    return out


# ---------------------------------------------------------------- fixtures

VARIANTS = {
    # Llama with grouped-query attention, separate LM head, f32 file.
    "llama_gqa": dict(model_type="llama", hidden_size=32, intermediate_size=88, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=160, rope_theta=10000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, dtype=torch.float32, long_T=300),
    # Multi-head attention, tied embeddings, bf16 file, linear rope scaling.
    "llama_mha_tied_bf16": dict(model_type="llama", hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                vocab_size=128, rope_theta=500.0, rms_norm_eps=1e-6,
                                tie_word_embeddings=True, rope_scaling={"rope_type": "linear", "factor": 2.0},
                                dtype=torch.bfloat16),
    # Qwen2: q/k/v biases, GQA 4:1, tied, large rope_theta.
    "qwen2_tied": dict(model_type="qwen2", hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=1, vocab_size=150, rope_theta=1000000.0,
                       rms_norm_eps=1e-6, tie_word_embeddings=True, dtype=torch.float32, eos_from_greedy=True),
    # Llama with every bias (attention_bias, mlp_bias), head_dim * heads != hidden, llama3 rope
    # scaling whose bands all occur at head_dim 16, f16 file.
    "llama_bias_llama3_f16": dict(model_type="llama", hidden_size=24, intermediate_size=56,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  head_dim=16, vocab_size=100, rope_theta=10000.0, rms_norm_eps=1e-5,
                                  tie_word_embeddings=False, attention_bias=True, mlp_bias=True,
                                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0,
                                                "original_max_position_embeddings": 64},
                                  dtype=torch.float16),
    # Mistral with a 3-token sliding window on every layer: the 12-token rows, generation
    # (prompt 5 + 10 new) and a 200-token sequence (the engine's second 128-row attention
    # block starts far right of the window) all reach well past it.
    "mistral_swa": dict(model_type="mistral", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, vocab_size=120, rope_theta=10000.0,
                        rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=3, dtype=torch.float32,
                        long_T=200),
    # Qwen2 with use_sliding_window: layer 0 (< max_window_layers) attends to everything,
    # layers 1 and 2 only to the last 4 positions.
    "qwen2_swa": dict(model_type="qwen2", hidden_size=32, intermediate_size=72, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=110, rope_theta=10000.0,
                      rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=True, sliding_window=4,
                      max_window_layers=1, dtype=torch.float32),
}


def make(out_root, name, spec, seed):
    spec = dict(spec)
    dtype = spec.pop("dtype")
    eos_from_greedy = spec.pop("eos_from_greedy", False)
    long_T = spec.pop("long_T", 0)
    d = dict(spec)
    d["hidden_act"] = "silu"
    d["max_position_embeddings"] = 256
    d["bos_token_id"] = 1
    d["eos_token_id"] = 2
    d["torch_dtype"] = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    d["architectures"] = [{"qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}.get(d["model_type"],
                                                                                           "LlamaForCausalLM")]
    c = Cfg(d)
    # Seeds whose greedy run has a near tie are skipped (the C sums in another order).
    while True:
        gen = torch.Generator().manual_seed(seed)
        P = random_params(c, gen, std=0.3)
        # What the file holds is what the model is: round through the file's dtype first.
        P = {k: v.to(dtype).float() for k, v in P.items()}
        prompt = torch.randint(0, c.V, (5,), generator=gen).tolist()
        try:
            gen_ids = greedy(c, P, prompt, 10, -1)
        except AssertionError:
            seed += 100
            continue
        break
    if eos_from_greedy:
        # An eos the model emits mid-way, so the test sees generation stop there.
        first = [t for i, t in enumerate(gen_ids) if t not in gen_ids[:i] and i >= 3][0]
        d["eos_token_id"] = first
        c = Cfg(d)
        gen_ids = gen_ids[:gen_ids.index(first) + 1]
    mdir = os.path.join(out_root, name)
    os.makedirs(mdir, exist_ok=True)
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(d, f, indent=2)
    st_write(os.path.join(mdir, "model.safetensors"), {k: v.to(dtype) for k, v in P.items()}, {"format": "pt"})

    B, T = 2, 12
    ids = torch.randint(0, c.V, (B, T), generator=gen)
    R = torch.randn(B, T, c.V, generator=gen)
    Pg = {k: v.clone().requires_grad_(True) for k, v in P.items()}
    logits = forward(c, Pg, ids)
    (logits * R).sum().backward()
    K = 5
    topv, topi = torch.topk(torch.log_softmax(logits.detach(), dim=-1), K, dim=-1)
    ref = {
        "ids": ids.to(torch.int32),
        "logits": logits.detach(),
        "R": R,
        "topk_ids": topi.to(torch.int32),
        "topk_logprobs": topv,
        "gen_prompt": torch.tensor(prompt, dtype=torch.int32),
        "gen_greedy": torch.tensor(gen_ids, dtype=torch.int32),
    }
    for k, v in Pg.items():
        ref["grad." + k] = v.grad
    if long_T:
        # One sequence longer than the engine's 128-row attention blocks (forward and backward
        # work block by block past that).
        gl = torch.Generator().manual_seed(seed + 7)
        ids_l = torch.randint(0, c.V, (1, long_T), generator=gl)
        R_l = torch.randn(1, long_T, c.V, generator=gl)
        Pg = {k: v.clone().requires_grad_(True) for k, v in P.items()}
        logits_l = forward(c, Pg, ids_l)
        (logits_l * R_l).sum().backward()
        ref["long.ids"] = ids_l.to(torch.int32)
        ref["long.logits"] = logits_l.detach()
        ref["long.R"] = R_l
        for k, v in Pg.items():
            ref["long.grad." + k] = v.grad
    st_write(os.path.join(out_root, name + ".ref.safetensors"), ref, {"K": str(K)})
    print(name, "params", sum(v.numel() for v in P.values()), "greedy", gen_ids)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/model"
    only = sys.argv[2:]
    for n in only:
        assert n in VARIANTS, f"unknown variant {n}"
    torch.manual_seed(0)
    for i, (name, spec) in enumerate(VARIANTS.items()):
        if not only or name in only:
            make(out, name, spec, 1000 + i)

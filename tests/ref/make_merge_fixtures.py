#!/usr/bin/python3
"""Reference merges for tests/test_merge.c, written from mergekit's definitions (merge_methods/
linear.py, generalized_task_arithmetic.py + sparsify.py for task_arithmetic/ties/dare, slerp.py,
sce.py) and FuseChat's (SCE with the selection feeding only the weights; VaRM), in
PyTorch/NumPy, independent of the C code.

Where mergekit leaves a detail open, this script fixes it the way fc_merge.h documents:
  * top-k ties (TIES magnitudes, SCE variances) go to the lower flat index (stable sort);
  * DARE's Bernoulli mask is counter-based: keep element j of model i iff u < density with
    h = splitmix64(seed ^ fnv1a64(name)); h = splitmix64(h + i); r = splitmix64(h + j // 2);
    u = (r >> 32 if j is even else r & 0xffffffff) * 2^-32;
  * per-element arithmetic is float32 (as mergekit's with dtype float32), sums over models
    taken in model order; SCE selects on sum_i (n d_i - sum_j d_j)^2 (n^3 times the variance,
    the same order without a division);
    the sign elections' sums (a float32 sum could round a tiny sum to the other sign) and
    the per-tensor sums of squares and dot products are taken in float64.

Writes tiny "models" (HF layout; the base is sharded in two files) and one YAML config plus
the expected merged tensors per case. Run by hand:
  /usr/bin/python3 tests/ref/make_merge_fixtures.py tests/fixtures/merge"""
import json, math, os, sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_write import st_write_f32  # noqa: E402

OUT = sys.argv[1]
g = torch.Generator().manual_seed(20240807)
M64 = (1 << 64) - 1


# ---- fixture models ----
# Shapes: an embedding, a projection with bias, an MLP matrix larger than two C blocks (8192
# elements) and the band selection's sample (16384) whose deltas are quantised to multiples of 1/4 (ties in magnitude and variance,
# exact zeros), a tensor whose deltas are all exactly zero, and two 1-D norms.
SHAPES = {
    "model.embed_tokens.weight": (16, 12),
    "model.layers.0.self_attn.q_proj.weight": (24, 16),
    "model.layers.0.self_attn.q_proj.bias": (24,),
    "model.layers.0.mlp.up_proj.weight": (128, 136),
    "model.layers.0.post_attention_layernorm.weight": (16,),
    "model.norm.weight": (16,),
}
QUANT = "model.layers.0.mlp.up_proj.weight"
ZERO = "model.layers.0.post_attention_layernorm.weight"
names = list(SHAPES)
base = {n: torch.randn(*s, generator=g) for n, s in SHAPES.items()}
base["model.norm.weight"] = 1 + 0.1 * torch.randn(16, generator=g)
base[ZERO] = torch.ones(16)
models = []
for i in range(3):
    m = {}
    for n, s in SHAPES.items():
        if n == ZERO:
            d = torch.zeros(*s)
        elif n == QUANT:
            d = torch.randint(-2, 3, s, generator=g).float() * 0.25  # {-.5..+.5}, 20% zeros
        else:
            d = 0.1 * (i + 1) * torch.randn(*s, generator=g)
        m[n] = (base[n] + d).float()
    models.append(m)

# Two more layers (drawn after the tensors above, so those keep their values), for the
# parameters that vary across layers: layer i of 3 sits at t = i / 2.
EXTRA = {
    "model.layers.1.self_attn.q_proj.weight": (24, 16),
    "model.layers.1.mlp.up_proj.weight": (12, 20),
    "model.layers.2.self_attn.q_proj.weight": (24, 16),
    "model.layers.2.mlp.up_proj.weight": (12, 20),
}
for n, sh in EXTRA.items():
    base[n] = torch.randn(*sh, generator=g)
for i, m in enumerate(models):
    for n, sh in EXTRA.items():
        m[n] = (base[n] + 0.1 * (i + 1) * torch.randn(*sh, generator=g)).float()
SHAPES.update(EXTRA)
names = list(SHAPES)
NLAYERS = 3

os.makedirs(OUT, exist_ok=True)
bdir = os.path.join(OUT, "base")
os.makedirs(bdir, exist_ok=True)
shard1 = {n: base[n] for n in names[:2]}
shard2 = {n: base[n] for n in names[2:]}
f1, f2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
st_write_f32(os.path.join(bdir, f1), shard1)
st_write_f32(os.path.join(bdir, f2), shard2)
wm = {n: f1 for n in shard1}
wm.update({n: f2 for n in shard2})
with open(os.path.join(bdir, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f, indent=1)
with open(os.path.join(bdir, "config.json"), "w") as f:
    json.dump({"model_type": "llama", "hidden_size": 16, "torch_dtype": "float32"}, f, indent=1)
with open(os.path.join(bdir, "tokenizer.json"), "w") as f:
    f.write('{"version": "1.0", "note": "fixture: copied verbatim by the merge"}\n')
for i, m in enumerate(models):
    d = os.path.join(OUT, "m%d" % (i + 1))
    os.makedirs(d, exist_ok=True)
    st_write_f32(os.path.join(d, "model.safetensors"), m)


# ---- helpers ----
def splitmix64(x):
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(M64)
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(M64)
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(M64)
    return x ^ (x >> np.uint64(31))


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for c in s.encode():
        h = ((h ^ c) * 0x100000001B3) & M64
    return h


def dare_mask(seed, name, i, n, density):
    with np.errstate(over="ignore"):
        h = splitmix64(np.uint64(seed ^ fnv1a64(name)))
        h = splitmix64(np.uint64((int(h) + i) & M64))
        j = np.arange(n, dtype=np.uint64)
        r = splitmix64(h + (j >> np.uint64(1)))
    x = np.where(j % np.uint64(2) == 0, r >> np.uint64(32), r & np.uint64(0xFFFFFFFF))
    u = x.astype(np.float64) * 2.0 ** -32
    return torch.from_numpy(u < density)


def topk_mask(keys32, k):
    """k largest of a float32 vector, ties to the lower index."""
    order = np.argsort(-keys32.numpy().astype(np.float64), kind="stable")[:k]
    m = torch.zeros(keys32.numel(), dtype=torch.bool)
    m[torch.from_numpy(order)] = True
    return m


def seqsum32(rows):
    s = torch.zeros_like(rows[0], dtype=torch.float32)
    for r in rows:
        s = s + r.float()
    return s


def seqsum64(rows):
    s = torch.zeros_like(rows[0], dtype=torch.float64)
    for r in rows:
        s = s + r.double()
    return s


# ---- methods (flat float32 vectors in, float32 out) ----
def linear(name, b, ms, w, p):
    acc = seqsum32([(torch.tensor(wi, dtype=torch.float32) * m) for wi, m in zip(w, ms)])
    if p.get("normalize", True):
        acc = acc / torch.tensor(sum(float(np.float32(x)) for x in w), dtype=torch.float32)
    return acc


def outliers_mask(d, density, gamma):
    """Breadcrumbs (mergekit's magnitude_outliers): of the deltas sorted by decreasing
    magnitude (ties: lower index first), skip the int(gamma n) largest, keep the next
    int(density n)."""
    n = d.numel()
    target, ntop = int(density * n), int(gamma * n)
    nbot = n - target - ntop
    if nbot < 0:
        ntop += nbot
    order = np.argsort(-d.abs().numpy().astype(np.float64), kind="stable")
    m = torch.zeros(n, dtype=torch.bool)
    m[torch.from_numpy(order[ntop:ntop + target])] = True
    return m


def della_drop(seed, name, i, d, shape, density, eps, rescale):
    """DELLA (mergekit's della_magprune): within each row (a 2-D tensor's rows, the whole of a
    1-D one), rank |delta| ascending (ties: lower index first) and keep element j with
    probability (density - eps) + rank_j / (cols - 1) * 2 * eps (float32, as mergekit's
    tensors), drawn with the counter-based DARE stream; survivors divided by their probability
    when rescale."""
    if density >= 1:
        return d
    if density <= 0:
        return torch.zeros_like(d)
    assert 0 < density - eps and density + eps < 1
    rows = d.reshape(shape[0], -1) if len(shape) >= 2 else d.reshape(1, -1)
    cols = rows.shape[1]
    order = np.argsort(rows.abs().numpy().astype(np.float64), axis=1, kind="stable")
    ranks = np.empty(order.shape, dtype=np.int64)
    np.put_along_axis(ranks, order, np.arange(cols)[None, :].repeat(rows.shape[0], 0), axis=1)
    f32 = lambda x: torch.tensor(x, dtype=torch.float32)
    rn = torch.from_numpy(ranks).float() / f32(float(cols - 1)) if cols > 1 else torch.zeros(rows.shape)
    prob = (f32(density - eps) + rn * f32(2.0) * f32(eps)).flatten()
    keep = dare_mask(seed, name, i, d.numel(), prob.double().numpy())
    kept = d / prob if rescale else d
    return torch.where(keep, kept, torch.zeros_like(d))


def gta(name, b, ms, w, dens, p, sparsify, consensus, default_norm, default_rescale,
        gam=None, eps=None, lam=1.0, shape=None):
    normalize = p.get("normalize", default_norm)
    rescale = p.get("rescale", default_rescale)
    deltas = []
    for i, m in enumerate(ms):
        d = m - b
        if sparsify == "outliers" and dens[i] < 1:
            d = torch.where(outliers_mask(d, dens[i], gam[i]), d, torch.zeros_like(d))
        elif sparsify == "della":
            d = della_drop(p.get("seed", 0), name, i, d, shape, dens[i], eps[i], rescale)
        elif sparsify == "magnitude" and dens[i] < 1:
            k = int(dens[i] * d.numel())
            d = torch.where(topk_mask(d.abs(), k), d, torch.zeros_like(d))
        elif sparsify == "random" and dens[i] < 1:
            keep = dare_mask(p.get("seed", 0), name, i, d.numel(), dens[i])
            d = torch.where(keep, d, torch.zeros_like(d))
            if rescale:
                d = d / torch.tensor(dens[i], dtype=torch.float32)
        deltas.append(d)
    w32 = [torch.tensor(x, dtype=torch.float32) for x in w]
    wd = [d * wi for d, wi in zip(deltas, w32)]
    if consensus:
        maj_pos = seqsum64(wd) >= 0
        masks = [torch.where(maj_pos, x > 0, x < 0) for x in wd]
        mixed = seqsum32([torch.where(mk, x, torch.zeros_like(x)) for x, mk in zip(wd, masks)])
        div = seqsum32([mk.float() * wi for mk, wi in zip(masks, w32)])
        div[div == 0] = 1
    else:
        mixed = seqsum32(wd)
        div = sum(float(x) for x in w32)
        if abs(div) < 1e-8:
            div = 1.0
        div = torch.tensor(div, dtype=torch.float32)
    if normalize:
        mixed = mixed / div
    if lam != 1.0:
        mixed = mixed * torch.tensor(lam, dtype=torch.float32)
    return b + mixed


def slerp(name, b, ms, p):
    v0, v1, t = b.double(), ms[0].double(), p["t"]
    n0, n1 = v0.norm().item(), v1.norm().item()
    eps = 1e-8
    dot = (v0 * v1).sum().item() / ((n0 if n0 > eps else 1) * (n1 if n1 > eps else 1))
    if abs(dot) > 0.9995:
        s0, s1 = 1 - t, t
    else:
        th0 = math.acos(dot)
        s0, s1 = math.sin(th0 - th0 * t) / math.sin(th0), math.sin(th0 * t) / math.sin(th0)
    s0, s1 = np.float32(s0), np.float32(s1)
    return (torch.tensor(s0) * b + torch.tensor(s1) * ms[0]).float()


def nearswap(b, m, t):
    """mergekit's nearswap, float32: weight clamp(t / max(|a - b|, 1e-6), 0, 1) on the model."""
    f32 = lambda x: torch.tensor(x, dtype=torch.float32)
    absdiff = torch.clamp((b - m).abs(), min=f32(1e-6))
    w = torch.clamp(f32(t) / absdiff, 0, 1)
    return w * m + (f32(1.0) - w) * b


def arcee_fusion(b, m, shape):
    """mergekit's arcee_fusion with exact quartiles (it samples a million elements of larger
    tensors): importance |m - b| times the KL divergence of the rows' softmaxes (last dimension,
    float64 here, plus 1e-8, the sum cast to float32); the model's values where the importance
    reaches median + 1.5 IQR, the quartiles at long(q * (n - 1)) of the sorted importances."""
    last = shape[-1]
    p = torch.softmax(m.reshape(-1, last).double(), -1) + 1e-8
    q = torch.softmax(b.reshape(-1, last).double(), -1) + 1e-8
    kl = torch.sum(p * torch.log(p / q), -1).float()
    imp = ((m - b).abs().reshape(-1, last) * kl.unsqueeze(-1)).reshape(-1)
    s, _ = torch.sort(imp)
    idx = (torch.tensor([0.25, 0.5, 0.75], dtype=torch.float32) * (imp.numel() - 1)).long()
    q1, med, q3 = s[idx]
    thr = med + torch.tensor(1.5, dtype=torch.float32) * (q3 - q1)
    return b + (m - b) * (imp >= thr).float()


def vectors(x, shape, along_first):
    """The vectors an angle is taken over: rows of the last dimension (mergekit's dim -1), or
    with along_first the vectors along the first dimension (dim 0); a 1-D tensor is one."""
    if len(shape) < 2:
        return x.reshape(1, -1)
    if along_first:
        return x.reshape(shape[0], -1).t()
    return x.reshape(-1, shape[-1])


def unvectors(v, shape, along_first):
    if len(shape) >= 2 and along_first:
        return v.t().reshape(-1)
    return v.reshape(-1)


def model_stock_rows(b, ms, shape):
    """model_stock with filter_wise: t per row of the last dimension (a 1-D tensor is one row)."""
    bv = vectors(b, shape, False)
    mv = [vectors(m, shape, False) for m in ms]
    rows = [model_stock(bv[r], [m[r] for m in mv]) for r in range(bv.shape[0])]
    return torch.stack(rows).reshape(-1)


def model_stock(b, ms):
    """mergekit's model_stock (filter_wise false): the mean pairwise cosine of the flattened
    deltas (clamped; norms' product at least 1e-6) sets t = N c / (1 + (N - 1) c); the result
    is t * mean(models) + (1 - t) * base. Sums of products in float64 (fc_merge.h)."""
    offs = [(m - b).double() for m in ms]
    cos = []
    for i in range(len(offs)):
        for j in range(i + 1, len(offs)):
            npr = offs[i].norm().item() * offs[j].norm().item()
            cos.append(max(-1.0, min(1.0, (offs[i] * offs[j]).sum().item() / max(npr, 1e-6))))
    c, n = sum(cos) / len(cos), len(ms)
    t = torch.tensor(n * c / (1 + (n - 1) * c), dtype=torch.float32)
    avg = seqsum32(ms) / torch.tensor(float(n), dtype=torch.float32)
    return t * avg + (torch.tensor(1.0) - t) * b


def nuslerp(b, ms, w):
    """mergekit's nuslerp (flatten): t = w1 / (w0 + w1), the angle of the two whole tensors
    (or of their deltas from the base, when given; norms clamped to 1e-7), lerp when
    |sin theta| < 1e-8; the coefficients rounded to float32 (fc_merge.h)."""
    v0, v1 = (ms[0] - b, ms[1] - b) if b is not None else (ms[0], ms[1])
    t = 0.5 if abs(w[0] + w[1]) < 1e-6 else w[1] / (w[0] + w[1])
    n0, n1 = max(v0.double().norm().item(), 1e-7), max(v1.double().norm().item(), 1e-7)
    cos = max(-1.0, min(1.0, (v0.double() * v1.double()).sum().item() / (n0 * n1)))
    th = math.acos(cos)
    st = math.sin(th)
    if abs(st) < 1e-8:
        c0, c1 = 1 - t, t
    else:
        c0, c1 = math.sin((1 - t) * th) / st, math.sin(t * th) / st
    r = torch.tensor(c0, dtype=torch.float32) * v0 + torch.tensor(c1, dtype=torch.float32) * v1
    return b + r if b is not None else r


def nuslerp_vectors(b, ms, w, shape, row_wise):
    """nuslerp with nuslerp_flatten false: one angle per row (the last dimension), or per
    column with nuslerp_row_wise (mergekit's dim 0)."""
    along = row_wise
    bv = vectors(b, shape, along) if b is not None else None
    mv = [vectors(m, shape, along) for m in ms]
    rows = [nuslerp(bv[r] if bv is not None else None, [m[r] for m in mv], w) for r in range(mv[0].shape[0])]
    return unvectors(torch.stack(rows), shape, along)


def ram(b, ms, eps=1e-5, plus=None):
    """mergekit's ram / ramplus_tl (ram.py): deltas above eps count as changed; changed by one
    model: that delta (ramplus_tl: times lambda_i = 1 + r clamp(shared_i / max(unique_i, eps), 0,
    alpha)), by several: their mean; the rest stays at the base. float32 throughout."""
    tv = torch.stack([m - b for m in ms])
    nz = tv.abs() > eps
    cnt = nz.sum(dim=0, keepdim=True)
    over, uniq = cnt > 1, cnt == 1
    tz = tv * nz
    if plus is None:
        lam = torch.ones(len(ms), 1)
    else:
        r, alpha = plus
        shared = (nz & over).sum(dim=1).float()
        unique = (nz & uniq).sum(dim=1).float()
        lam = (1 + r * (shared / unique.clamp(min=eps)).clamp(min=0, max=alpha)).unsqueeze(-1)
    terms = tz * uniq * lam + tz * over / cnt.clamp(min=1)
    acc = terms[0].clone()
    for i in range(1, len(ms)):  # the sum over models in model order
        acc = acc + terms[i]
    return b + acc


def multislerp(b, ms, w, normalize=True, eps=1e-8):
    """mergekit's multislerp, literally (tangent space at the weighted mean direction and the
    exponential map back), in float64; an all-zero stack (models equal to the base) gives the
    base (fc_merge.h)."""
    x = torch.stack([m - b if b is not None else m for m in ms]).double()
    wt = torch.tensor(w, dtype=torch.float64)
    if normalize:
        wt = wt / wt.sum()
    norms = torch.norm(x, dim=-1, keepdim=True)
    if norms.abs().sum() == 0:
        return b.clone()
    unit = x / (norms + eps)
    mean = (unit * wt.view(-1, 1)).sum(0)
    mnorm = torch.norm(mean)
    if mnorm < eps:
        assert len(ms) == 2
        res = x[0] * wt[0] + x[1] * wt[1]
    else:
        mean = mean / mnorm
        dots = (unit * mean).sum(-1, keepdim=True)
        tang = ((unit - dots * mean) * wt.view(-1, 1)).sum(0)
        tn = torch.norm(tang) + eps
        res = mean * torch.cos(tn) + tang * (torch.sin(tn) / tn)
        res = res * (norms.squeeze(-1) * wt).sum()
    res = res.float()
    return b + res if b is not None else res


def karcher(ms, max_iter=10, tol=1e-5):
    """mergekit's karcher_merge_tensors, literally, in float64 (equal weights)."""
    alphas = [1.0 / len(ms)] * len(ms)
    xs = [m.double() for m in ms]
    norms = [x.norm().item() for x in xs]
    units = [x / n if n > 0 else torch.zeros_like(x) for x, n in zip(xs, norms)]
    valid = [i for i, n in enumerate(norms) if n > tol]
    if not valid:
        return torch.zeros_like(ms[0])
    asum = sum(alphas[i] for i in valid)
    na = [alphas[i] / asum for i in valid]
    vu = [units[i] for i in valid]
    u = sum(a * x for a, x in zip(na, vu))
    nu = u.norm().item()
    u = vu[0].clone() if nu < tol else u / nu
    for _ in range(max_iter):
        T = torch.zeros_like(u)
        for a, x in zip(na, vu):
            dot = max(-1.0, min(1.0, torch.dot(u, x).item()))
            th = math.acos(dot)
            if th < tol:
                continue
            T += a * (th / math.sin(th)) * (x - dot * u)
        nt = T.norm().item()
        if nt < tol:
            break
        u = math.cos(nt) * u + math.sin(nt) * (T / nt)
        un = u.norm().item()
        if un > tol:
            u = u / un
    return (sum(a * n for a, n in zip(alphas, norms)) * u).float()


def sce(name, b, ms, p, weights_out):
    topk = p.get("select_topk", 1.0)
    scope = p.get("sce_mask_scope", "deltas")
    deltas = [m - b for m in ms]
    n = len(deltas)
    if topk <= 0:
        sel = torch.zeros(b.numel(), dtype=torch.bool)
    elif topk >= 1:
        sel = torch.ones(b.numel(), dtype=torch.bool)
    else:
        # n^3 * population variance, without a division (fc_merge.c: block_var): same order.
        fn = torch.tensor(float(n), dtype=torch.float32)
        s = seqsum32(deltas)
        var32 = seqsum32([(fn * d - s) * (fn * d - s) for d in deltas])
        nz = torch.count_nonzero(var32)
        k = int(nz * topk)  # a float32 tensor product, as in mergekit
        sel = topk_mask(var32, k) if k > 0 else torch.zeros(b.numel(), dtype=torch.bool)
    sel_d = [torch.where(sel, d, torch.zeros_like(d)) for d in deltas]
    ms2 = [(x.double() ** 2).sum().item() / x.numel() for x in sel_d]
    tot = sum(ms2)
    W = [1.0 / n] * n if abs(tot) < 1e-6 else [x / tot for x in ms2]
    W = [float(np.float32(x)) for x in W]
    weights_out.append(W)
    use = sel_d if scope == "deltas" else deltas
    maj_pos = seqsum64(use) >= 0
    masks = [torch.where(maj_pos, x > 0, x < 0) for x in use]
    W32 = [torch.tensor(wi, dtype=torch.float32) for wi in W]
    mixed = seqsum32([torch.where(mk, x * wi, torch.zeros_like(x)) for x, mk, wi in zip(use, masks, W32)])
    div = seqsum32([mk.float() * wi for mk, wi in zip(masks, W32)])
    div = torch.maximum(div, torch.tensor(1e-6, dtype=torch.float32))
    return b + mixed / div


def varm(name, b, ms, weights_out):
    ms2 = [((m - b).double() ** 2).sum().item() / b.numel() for m in ms]
    tot = sum(ms2)
    W = [1.0 / len(ms)] * len(ms) if tot == 0 else [x / tot for x in ms2]
    W = [float(np.float32(x)) for x in W]
    weights_out.append(W)
    return seqsum32([torch.tensor(wi, dtype=torch.float32) * m for wi, m in zip(W, ms)])


# ---- cases: (name, method, [(model index, weight, density)], global parameters) ----
CASES = [
    ("linear", "linear", [(1, 0.5, None), (2, 0.3, None), (3, 0.2, None)], {}),
    ("linear_nonorm", "linear", [(1, 1.0, None), (2, 0.5, None)], {"normalize": False}),
    ("task_arithmetic", "task_arithmetic", [(1, 0.5, None), (2, 0.7, None), (3, -0.3, None)], {}),
    ("ties", "ties", [(1, 1.0, 0.5), (2, 0.5, 0.3), (3, 0.8, 0.7)], {}),
    ("ties_nonorm", "ties", [(1, 1.0, 0.5), (2, 0.5, 0.3), (3, 0.8, 0.7)], {"normalize": False}),
    ("dare_ties", "dare_ties", [(1, 1.0, 0.6), (2, 0.5, 0.5), (3, 0.8, 0.8)], {"seed": 7}),
    ("dare_linear", "dare_linear", [(1, 0.6, 0.6), (2, 0.4, 0.5)], {"seed": 11}),
    ("slerp", "slerp", [(0, 1.0, None), (1, 1.0, None)], {"t": 0.3}),
    ("sce", "sce", [(1, None, None), (2, None, None), (3, None, None)], {"select_topk": 0.3}),
    ("sce_weights", "sce", [(1, None, None), (2, None, None), (3, None, None)],
     {"select_topk": 0.3, "sce_mask_scope": "weights"}),
    ("sce_all", "sce", [(1, None, None), (2, None, None), (3, None, None)], {}),
    ("varm", "varm", [(1, None, None), (2, None, None), (3, None, None)], {}),
]

edir = os.path.join(OUT, "expected")
os.makedirs(edir, exist_ok=True)
summary = {}
for cname, method, mlist, params in CASES:
    lines = ["# fixture case %s (tests/ref/make_merge_fixtures.py)" % cname,
             "merge_method: %s" % method, "base_model: base", "models:"]
    for idx, w, dn in mlist:
        lines.append("  - model: %s" % ("base" if idx == 0 else "m%d" % idx))
        ps = []
        if w is not None:
            ps.append("weight: %r" % w)
        if dn is not None:
            ps.append("density: %r" % dn)
        if ps:
            lines.append("    parameters: {%s}" % ", ".join(ps))
    gp = {k: v for k, v in params.items() if k != "seed"}
    if gp:
        lines.append("parameters:")
        for k, v in gp.items():
            lines.append("  %s: %s" % (k, str(v).lower() if isinstance(v, bool) else v))
    if "seed" in params:
        lines.append("seed: %d" % params["seed"])
    with open(os.path.join(OUT, cname + ".yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")

    inputs = [models[idx - 1] for idx, _, _ in mlist if idx != 0 or method == "linear"]
    w = [x[1] if x[1] is not None else 1.0 for x in mlist if x[0] != 0]
    dens = [x[2] if x[2] is not None else 1.0 for x in mlist if x[0] != 0]
    out, wlog = {}, []
    for n in names:
        b = base[n].flatten()
        ms = [m[n].flatten() for m in inputs]
        if method == "linear":
            r = linear(n, b, ms, w, params)
        elif method == "task_arithmetic":
            r = gta(n, b, ms, w, dens, params, None, False, False, False)
        elif method == "ties":
            r = gta(n, b, ms, w, dens, params, "magnitude", True, True, False)
        elif method == "dare_ties":
            r = gta(n, b, ms, w, dens, params, "random", True, False, True)
        elif method == "dare_linear":
            r = gta(n, b, ms, w, dens, params, "random", False, False, True)
        elif method == "slerp":
            r = slerp(n, b, ms, params)
        elif method == "sce":
            r = sce(n, b, ms, params, wlog)
        elif method == "varm":
            r = varm(n, b, ms, wlog)
        out[n] = r.reshape(SHAPES[n])
    st_write_f32(os.path.join(edir, cname + ".safetensors"), out)
    if wlog:
        summary[cname] = [sum(col) / len(col) for col in zip(*wlog)]

# ---- mergekit's configs as written: parameters resolved per tensor ----
# Written from mergekit's config.py (evaluate_setting, ConfigReader.parameter) and plan.py (a
# layer's t = i / (layers - 1); tensors outside the layers at t = 0): a model's own value first,
# then the global one, each the first condition whose filter is in the tensor's name, a list of
# numbers interpolated at t.
import re
import yaml


def evaluate(setting, name, t):
    if isinstance(setting, (int, float)):
        return float(setting)
    if isinstance(setting, dict):
        setting = [setting]
    if all(isinstance(e, (int, float)) for e in setting):
        x = t * (len(setting) - 1)
        i0 = int(x)
        i1 = min(len(setting) - 1, i0 + 1)
        f = x - i0
        return (1 - f) * setting[i0] + f * setting[i1]
    for c in setting:
        flt = c.get("filter")
        if flt is None or flt == "*" or flt in name:
            return evaluate(c["value"], name, t)
    return None


def layer_t(name):
    m = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
    if not m:
        return 0.0
    return int(m.group(1)) / (NLAYERS - 1) if NLAYERS > 1 else 1.0


def param(cfg, key, name, model=None, default=None, t=None):
    t = layer_t(name) if t is None else t
    if model is not None:
        own = model.get("parameters") or {}
        v = evaluate(own[key], name, t) if key in own else None
        if v is not None:
            return v
    if key in cfg.get("parameters", {}):
        v = evaluate(cfg["parameters"][key], name, t)
        if v is not None:
            return v
    return default


GTA = {  # method: sparsification, consensus, default normalize, default rescale (registry.py)
    "task_arithmetic": (None, False, False, False),
    "ties": ("magnitude", True, True, False),
    "breadcrumbs": ("outliers", False, False, False),
    "breadcrumbs_ties": ("outliers", True, False, False),
    "della": ("della", True, True, True),
    "della_linear": ("della", False, False, True),
}

CONFIGS = {
    # The example: density given once, under the top-level parameters.
    "ties_global": """
merge_method: ties
base_model: base
models:
  - model: m1
    parameters: {weight: 1.0}
  - model: m2
    parameters: {weight: 1.0}
parameters: {density: 0.5, normalize: true}
""",
    "breadcrumbs": """
merge_method: breadcrumbs
base_model: base
models:
  - model: m1
    parameters:
      weight: 0.6
      gamma: 0.05
  - model: m2
    parameters:
      weight: 0.4
  - model: m3
    parameters:
      weight: 0.3
      density: 0.9
parameters:
  density: 0.6
  gamma: 0.02
""",
    "breadcrumbs_ties": """
merge_method: breadcrumbs_ties
base_model: base
models:
  - model: m1
    parameters: {weight: 1.0}
  - model: m2
    parameters: {weight: 0.5}
  - model: m3
    parameters: {weight: 0.8}
parameters:
  density: 0.5
  normalize: true
""",
    "della": """
merge_method: della
base_model: base
models:
  - model: m1
    parameters: {weight: 1.0, density: 0.5}
  - model: m2
    parameters: {weight: 0.6, density: 0.4, epsilon: 0.2}
  - model: m3
    parameters: {weight: 0.8}
parameters:
  density: 0.7
  epsilon: 0.1
  lambda: 0.9
seed: 3
""",
    "della_linear": """
merge_method: della_linear
base_model: base
models:
  - model: m1
    parameters: {weight: 0.5, density: 0.6}
  - model: m2
    parameters: {weight: 0.3, density: 0.5}
parameters:
  epsilon: 0.15
  normalize: true
seed: 9
""",
    # Layer gradients: a model's weight and the global density vary across the layers.
    "gradient": """
merge_method: ties
base_model: base
models:
  - model: m1
    parameters:
      weight: [0.2, 1.0, 0.5]
  - model: m2
    parameters:
      weight: 0.7
      density: [0.9, 0.3]
  - model: m3
    parameters:
      weight: [1.0, 0.1]
parameters:
  density: [0.3, 0.7]
""",
    # mergekit's classic SLERP: t by tensor-name filter, each a gradient, and a default.
    "filter": """
merge_method: slerp
base_model: base
models:
  - model: base
  - model: m1
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: float32
""",
    # NearSwap with t by layer: the model's values where they lie within t of the base's.
    "nearswap": """
merge_method: nearswap
base_model: base
models:
  - model: m1
parameters:
  t: [0.05, 0.2]
""",
    "model_stock": """
merge_method: model_stock
base_model: base
models:
  - model: base
  - model: m1
  - model: m2
  - model: m3
parameters:
  filter_wise: false
""",
    "nuslerp": """
merge_method: nuslerp
base_model: base
models:
  - model: m1
    parameters: {weight: 0.7}
  - model: m2
    parameters: {weight: [0.3, 0.9]}
""",
    # RAM: the quantised tensor's exact zeros and the all-zero one exercise the changed masks;
    # epsilon high enough that some deltas of the others count as unchanged.
    "ram": """
merge_method: ram
base_model: base
models:
  - model: m1
  - model: m2
  - model: m3
parameters:
  epsilon: 0.05
""",
    "nuslerp_nobase": """
merge_method: nuslerp
models:
  - model: m1
    parameters: {weight: 1.0}
  - model: m3
    parameters: {weight: 0.5}
parameters:
  nuslerp_flatten: true
""",
    "multislerp": """
merge_method: multislerp
base_model: base
models:
  - model: m1
    parameters: {weight: 0.5}
  - model: m2
    parameters: {weight: 0.3}
  - model: m3
    parameters: {weight: [0.2, 0.6]}
""",
    "multislerp_nobase": """
merge_method: multislerp
models:
  - model: m1
    parameters: {weight: 1}
  - model: m2
    parameters: {weight: 2}
parameters:
  normalize_weights: true
""",
    "arcee_fusion": """
merge_method: arcee_fusion
base_model: base
models:
  - model: base
  - model: m2
""",
    "karcher": """
merge_method: karcher
models:
  - model: m1
  - model: m2
  - model: m3
parameters:
  max_iter: 20
  tol: 1.0e-7
""",
    # Filters on a model's weight (falling back to the global default where none matches)
    # and a layer gradient on lambda.
    "filter_models": """
merge_method: task_arithmetic
base_model: base
models:
  - model: m1
    parameters:
      weight:
        - filter: mlp
          value: 0.2
        - filter: q_proj
          value: [0.9, 0.1]
  - model: m2
    parameters:
      weight:
        - filter: mlp
          value: 1.0
parameters:
  weight: 0.5
  lambda: [1.0, 0.5]
""",
}

# The per-vector variants of configs above: one angle (or t) per row of the last dimension,
# and one angle per column (nuslerp_row_wise).
CONFIGS["nuslerp_rows"] = CONFIGS["nuslerp"] + "parameters:\n  nuslerp_flatten: false\n"
CONFIGS["nuslerp_cols_nobase"] = CONFIGS["nuslerp_nobase"].replace(
    "nuslerp_flatten: true", "nuslerp_flatten: false\n  nuslerp_row_wise: true")
CONFIGS["model_stock_rows"] = CONFIGS["model_stock"].replace("filter_wise: false", "filter_wise: true")
# RAM+ on the same models, with a wider epsilon and its r and alpha.
CONFIGS["ramplus_tl"] = CONFIGS["ram"].replace("merge_method: ram", "merge_method: ramplus_tl").replace(
    "epsilon: 0.05", "epsilon: 0.1\n  r: 0.3\n  alpha: 0.5")

for cname, text in CONFIGS.items():
    with open(os.path.join(OUT, cname + ".yaml"), "w") as f:
        f.write("# fixture case %s (tests/ref/make_merge_fixtures.py)\n" % cname + text.lstrip())
    cfg = yaml.safe_load(text)
    method = cfg["merge_method"]
    p = {k: v for k, v in cfg.get("parameters", {}).items() if isinstance(v, bool)}
    if "seed" in cfg:
        p["seed"] = cfg["seed"]
    entries = [m for m in cfg["models"] if m["model"] != cfg.get("base_model") or method == "linear"]
    inputs = [models[int(m["model"][1:]) - 1] for m in entries]
    out = {}
    for n in names:
        b = base[n].flatten()
        ms = [m[n].flatten() for m in inputs]
        if method == "slerp":
            r = slerp(n, b, [models[0][n].flatten()], {"t": param(cfg, "t", n)})
        elif method == "nuslerp":
            w = [param(cfg, "weight", n, m, 1.0) for m in entries]
            if cfg.get("parameters", {}).get("nuslerp_flatten", True):
                r = nuslerp(b if "base_model" in cfg else None, ms, w)
            else:
                r = nuslerp_vectors(b if "base_model" in cfg else None, ms, w, SHAPES[n],
                                    cfg["parameters"].get("nuslerp_row_wise", False))
        elif method == "multislerp":
            w = [param(cfg, "weight", n, m, 1.0) for m in entries]
            r = multislerp(b if "base_model" in cfg else None, ms, w)
        elif method == "karcher":
            r = karcher(ms, cfg.get("parameters", {}).get("max_iter", 10), cfg.get("parameters", {}).get("tol", 1e-5))
        elif method == "model_stock":
            if cfg.get("parameters", {}).get("filter_wise", False):
                r = model_stock_rows(b, ms, SHAPES[n])
            else:
                r = model_stock(b, ms)
        elif method == "nearswap":
            r = nearswap(b, models[0][n].flatten(), param(cfg, "t", n))
        elif method in ("ram", "ramplus_tl"):
            pp = cfg.get("parameters", {})
            plus = (pp.get("r", 0.1), pp.get("alpha", 0.2)) if method == "ramplus_tl" else None
            r = ram(b, ms, pp.get("epsilon", 1e-5), plus)
        elif method == "arcee_fusion":
            r = arcee_fusion(b, ms[0], SHAPES[n])
        else:
            sp, cons, dn, dr = GTA[method]
            w = [param(cfg, "weight", n, m, 1.0) for m in entries]
            dens = [param(cfg, "density", n, m, 1.0) for m in entries]
            gam = [param(cfg, "gamma", n, m, 0.01) for m in entries]
            eps = [param(cfg, "epsilon", n, m, 0.15) for m in entries]
            lam = param(cfg, "lambda", n, None, 1.0)
            r = gta(n, b, ms, w, dens, p, sp, cons, dn, dr, gam, eps, lam, SHAPES[n])
        out[n] = r.reshape(SHAPES[n])
    st_write_f32(os.path.join(edir, cname + ".safetensors"), out)

# ---- merges by slices (mergekit's plan.py): each slice lists the same models with layer ranges
# of one length; output layer j of a slice merges layer first_i + j of each model i at
# t = j / (len - 1) (1 for a one-layer slice); tensors outside the layers keep their names, t = 0.
SLICE_CONFIGS = {
    # mergekit's classic SLERP written with slices: a slice that pairs different layers, and a
    # gradient over each slice.
    "slices_slerp": """
merge_method: slerp
base_model: base
slices:
  - sources:
      - model: base
        layer_range: [0, 1]
      - model: m1
        layer_range: [0, 1]
  - sources:
      - model: base
        layer_range: [1, 3]
      - model: m1
        layer_range: [1, 3]
  - sources:
      - model: base
        layer_range: [2, 3]
      - model: m1
        layer_range: [1, 2]
parameters:
  t:
    - filter: self_attn
      value: [0.2, 0.9]
    - value: 0.4
dtype: float32
""",
    # TIES over slices whose sources are listed in another order, with a density gradient.
    "slices_ties": """
merge_method: ties
base_model: base
slices:
  - sources:
      - model: m1
        layer_range: [0, 2]
      - model: base
        layer_range: [0, 2]
      - model: m2
        layer_range: [0, 2]
  - sources:
      - model: base
        layer_range: [2, 3]
      - model: m2
        layer_range: [2, 3]
      - model: m1
        layer_range: [1, 2]
parameters:
  density: [0.3, 0.8]
  weight: 0.7
""",
}


def relayer(name, i):
    return re.sub(r"(^|\.)layers\.\d+\.", lambda m: "%slayers.%d." % (m.group(1), i), name, count=1)


def layer_of(name):
    m = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


for cname, text in SLICE_CONFIGS.items():
    with open(os.path.join(OUT, cname + ".yaml"), "w") as f:
        f.write("# fixture case %s (tests/ref/make_merge_fixtures.py)\n" % cname + text.lstrip())
    cfg = yaml.safe_load(text)
    method = cfg["merge_method"]
    bname = cfg["base_model"]
    order = [s["model"] for s in cfg["slices"][0]["sources"] if s["model"] != bname]
    files = {"base": base, "m1": models[0], "m2": models[1], "m3": models[2]}
    plan = [(n, n, {m: n for m in order + [bname]}, 0.0) for n in names if layer_of(n) < 0 and "embed" in n]
    depth = 0
    for sl in cfg["slices"]:
        first = {s["model"]: s["layer_range"][0] for s in sl["sources"]}
        ln = sl["sources"][0]["layer_range"][1] - sl["sources"][0]["layer_range"][0]
        for j in range(ln):
            t = j / (ln - 1) if ln > 1 else 1.0
            for n in names:
                if layer_of(n) == first[bname] + j:
                    plan.append((relayer(n, depth), n, {m: relayer(n, first[m] + j) for m in first}, t))
            depth += 1
    plan += [(n, n, {m: n for m in order + [bname]}, 0.0) for n in names if layer_of(n) < 0 and "embed" not in n]
    out = {}
    for oname, lname, src, t in plan:
        b = files[bname][src[bname]].flatten()
        ms = [files[m][src[m]].flatten() for m in order]
        shape = files[bname][lname].shape
        if method == "slerp":
            r = slerp(oname, b, ms, {"t": param(cfg, "t", oname, t=t)})
        else:
            sp, cons, dn, dr = GTA[method]
            k = len(order)
            w = [param(cfg, "weight", oname, None, 1.0, t=t)] * k
            dens = [param(cfg, "density", oname, None, 1.0, t=t)] * k
            r = gta(oname, b, ms, w, dens, {}, sp, cons, dn, dr, [0.01] * k, [0.15] * k, 1.0, tuple(shape))
        out[oname] = r.reshape(shape)
    st_write_f32(os.path.join(edir, cname + ".safetensors"), out)
    with open(os.path.join(edir, cname + ".depth"), "w") as f:
        f.write("%d\n" % depth)

with open(os.path.join(edir, "weights.json"), "w") as f:
    json.dump(summary, f, indent=1)
print("wrote", len(CASES) + len(CONFIGS) + len(SLICE_CONFIGS), "cases to", OUT)

#!/usr/bin/python3
"""Reference for tokenizer_source: union (tests/test_merge_layout.c), written from mergekit's
tokenizer/build.py (get_stripped_tokenizer, build_union_tokenizer, build_tokenizer's
permutations) and tokenizer/embed.py (PermutedEmbeddings: the one donor, else the base's row,
else the mean, zeros for none; pad_to_multiple_of rows the mean of the real ones), in PyTorch,
independent of the C code. It reads the tokenizer.json files it writes as mergekit's
transformers tokenizers would see them (model.vocab plus added_tokens), not through C.

The one detail mergekit leaves open is fixed as src/merge/fc_merge_vocab.c documents: mergekit
walks each tokenizer's get_vocab(), a hash map in arbitrary order; here ids go in ascending
order. A new token takes the next id after the highest (the tokenizers library's rule).

Three tiny models with overlapping vocabularies: the base has tokens at and past its
vocab_size (stripped), the models share tokens the base lacks (their mean), have tokens only
one holds (that one's row), an added token declared in two models with different flags (the
first's kept), a non-ASCII token. Writes tests/fixtures/merge/union/{base,m1,m2}, union.yaml
and union_pad.yaml (task arithmetic), expected/*.safetensors and expected/*_vocab.json.
Run by hand:  /usr/bin/python3 tests/ref/make_union_fixtures.py tests/fixtures/merge/union"""
import json, os, sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_write import st_write_f32  # noqa: E402

OUT = sys.argv[1]
H = 4
g = torch.Generator().manual_seed(17017)


def added(i, c, special, **kw):
    e = {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": not special, "special": special}
    e.update(kw)
    return e


MODELS = {
    # the base: "q" (5) and "<pad>" (6) at or past vocab_size 5 are stripped, with the merge using q
    "base": ({"a": 0, "b": 1, "c": 2, "ab": 3, "<s>": 4, "q": 5}, ["a b", "q a"],
             [added(4, "<s>", True), added(6, "<pad>", True)], 5),
    "m1": ({"b": 0, "a": 1, "d": 2, "<s>": 3, "q": 4, "\u00e9": 5}, ["b a"],
           [added(3, "<s>", True), added(6, "<|im_end|>", True)], 7),
    # m2 declares <|im_end|> with other flags (m1's are kept); its <pad> (6) is past vocab_size 6
    "m2": ({"c": 0, "d": 1, "e": 2, "a": 3, "x": 4}, [],
           [added(5, "<|im_end|>", False, lstrip=True), added(6, "<pad>", True)], 6),
}
ORDER = ["base", "m1", "m2"]

tensors = {}
for name in ORDER:
    vocab, merges, add, vs = MODELS[name]
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    tok = {"version": "1.0", "added_tokens": add, "normalizer": None, "pre_tokenizer": None,
           "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tok, f, indent=2, ensure_ascii=False)
    tc = {"added_tokens_decoder": {str(e["id"]): {k: v for k, v in e.items() if k != "id"} for e in add}}
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "vocab_size": vs, "num_hidden_layers": 1}, f, indent=2)
    t = {"model.embed_tokens.weight": torch.randn(vs, H, generator=g),
         "model.layers.0.mlp.w": torch.randn(3, H, generator=g),
         "lm_head.weight": torch.randn(vs, H, generator=g)}
    st_write_f32(os.path.join(d, "model.safetensors"), t)
    tensors[name] = t


# ---- mergekit's build_tokenizer with tokenizer_source union ----
def get_vocab(name):
    """transformers' get_vocab() of the fast tokenizer: model.vocab plus added_tokens."""
    vocab, _, add, _ = MODELS[name]
    v = dict(vocab)
    for e in add:
        v[e["content"]] = e["id"]
    return v


def added_decoder(name):
    return {e["id"]: e for e in sorted(MODELS[name][2], key=lambda e: e["id"])}


def stripped(name):
    vs = MODELS[name][3]
    return {t: i for t, i in get_vocab(name).items() if i < vs}


def by_id(v):
    return sorted(v.items(), key=lambda kv: kv[1])  # the order fixed here (mergekit: hash order)


out_vocab, out_added = {}, {}
for name in ORDER:  # base first, then the models
    vs = MODELS[name][3]
    for tok, idx in by_id(get_vocab(name)):
        if idx >= vs:
            continue
        if tok not in out_vocab:
            out_vocab[tok] = len(out_vocab)
    for idx, info in added_decoder(name).items():
        if idx < vs and info["content"] not in out_added:
            out_added[info["content"]] = info
res = stripped("base")
res_added = {t: dict(e) for t, e in ((e["content"], e) for e in MODELS["base"][2]) if e["id"] < MODELS["base"][3]}


def add_token(tok, info):
    if tok in res:  # add_tokens leaves a token the tokenizer has where it is
        return
    res[tok] = max(res.values()) + 1
    e = dict(info)
    e["id"] = res[tok]
    res_added[tok] = e


base_vocab = stripped("base")
for tok in out_vocab:
    if tok in out_added:
        continue
    if tok not in base_vocab:
        add_token(tok, added(0, tok, False))
for tok, info in out_added.items():
    add_token(tok, info)

perms = {}
for name in ORDER:
    mv, vs = get_vocab(name), MODELS[name][3]
    p = {}
    for tok, new in res.items():
        orig = mv.get(tok, -1)
        p[new] = orig if orig < vs else -1
    perms[name] = p


# ---- PermutedEmbeddings, then task arithmetic (base + 1.0 (m1 - base) + 0.5 (m2 - base)) ----
def permuted(tname, pad):
    n = len(res)
    rows = n if not pad or n % pad == 0 else (n // pad + 1) * pad
    src = {}
    for tok, tid in res.items():
        have = [m for m in ORDER if perms[m][tid] >= 0]
        if len(have) == 1:
            src[tid] = ("one", have[0])
        elif not have:
            src[tid] = ("zero", None)
        elif perms["base"][tid] >= 0:
            src[tid] = ("one", "base")
        else:
            src[tid] = ("mean", have)
    out = {}
    for m in ORDER:
        e = torch.zeros(rows, H)
        for tid in range(n):
            if perms[m][tid] >= 0:
                e[tid] = tensors[m][tname][perms[m][tid]]
            elif src[tid][0] == "one":
                e[tid] = tensors[src[tid][1]][tname][perms[src[tid][1]][tid]]
            elif src[tid][0] == "mean":
                acc = torch.zeros(H)
                for q in src[tid][1]:
                    acc += tensors[q][tname][perms[q][tid]]
                e[tid] = acc / len(src[tid][1])
        if rows > n:
            e[n:] = e[:n].double().mean(dim=0).float()
        out[m] = e
    return out


def task_arithmetic(b, m1, m2):
    return b + ((m1 - b) * 1.0 + (m2 - b) * 0.5)


os.makedirs(os.path.join(OUT, "expected"), exist_ok=True)
for case, pad, head in (("union", 0, "tokenizer_source: union\n"),
                        ("union_pad", 8, "tokenizer:\n  source: union\n  pad_to_multiple_of: 8\n")):
    exp = {}
    for tname in ("model.embed_tokens.weight", "model.layers.0.mlp.w", "lm_head.weight"):
        if tname.endswith("mlp.w"):
            ins = {m: tensors[m][tname] for m in ORDER}
        else:
            ins = permuted(tname, pad)
        exp[tname] = task_arithmetic(ins["base"], ins["m1"], ins["m2"])
    st_write_f32(os.path.join(OUT, "expected", case + ".safetensors"), exp)
    with open(os.path.join(OUT, "expected", case + "_vocab.json"), "w") as f:
        json.dump({"vocab": res, "rows": exp["lm_head.weight"].shape[0],
                   "added": {t: e for t, e in res_added.items()}}, f, indent=1, ensure_ascii=False)
    with open(os.path.join(OUT, case + ".yaml"), "w") as f:
        f.write("# tokenizer_source union (tests/ref/make_union_fixtures.py)\n"
                "merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: m1\n"
                "    parameters: {weight: 1.0}\n  - model: m2\n    parameters: {weight: 0.5}\n"
                "dtype: float32\n" + head)
print("union vocabulary:", by_id(res))

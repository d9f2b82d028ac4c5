#!/usr/bin/python3
"""Writes the safetensors fixtures for tests/test_st.c with the reference scripts' independent
writer (st_write.py: json + struct, dtype conversions by PyTorch), plus the values PyTorch
reads back as f32.
Run by hand: /usr/bin/python3 tests/ref/make_st_fixtures.py tests/fixtures/st"""
import json, sys, os
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_write import st_write as write  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(1234)

tensors = {
    "a.weight": torch.randn(3, 5, generator=g),
    "b.half": (torch.randn(4, 2, 3, generator=g) * 100).half(),
    "c.bf16": (torch.randn(7, generator=g) * 1e-3).bfloat16(),
    "d.scalar": torch.tensor(3.25),
    "e.empty": torch.zeros(0, 4),
    "f.ids": torch.arange(6, dtype=torch.int64),
}
write(os.path.join(out, "basic.safetensors"), tensors, {"format": "pt", "note": "fixture"})
expected = {k: v.float().flatten().tolist() for k, v in tensors.items() if v.dtype != torch.int64}
expected_shapes = {k: list(v.shape) for k, v in tensors.items()}
# A sharded model: two files and an index.
shard_dir = os.path.join(out, "sharded")
os.makedirs(shard_dir, exist_ok=True)
s1 = {"model.embed_tokens.weight": torch.randn(6, 4, generator=g)}
s2 = {"model.norm.weight": torch.randn(4, generator=g).bfloat16(), "lm_head.weight": torch.randn(6, 4, generator=g).half()}
write(os.path.join(shard_dir, "model-00001-of-00002.safetensors"), s1, {"format": "pt"})
write(os.path.join(shard_dir, "model-00002-of-00002.safetensors"), s2, {"format": "pt"})
wm = {k: "model-00001-of-00002.safetensors" for k in s1}
wm.update({k: "model-00002-of-00002.safetensors" for k in s2})
with open(os.path.join(shard_dir, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f, indent=1)
for d in (s1, s2):
    expected.update({k: v.float().flatten().tolist() for k, v in d.items()})
    expected_shapes.update({k: list(v.shape) for k, v in d.items()})
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump({"values": expected, "shapes": expected_shapes}, f)

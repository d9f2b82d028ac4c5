"""The safetensors writer every reference script in tests/ref shares: json + struct, with the
dtype conversions left to PyTorch, independent of the C writer.

Layout: the header's length (u64, little-endian), the JSON header, then the tensors' bytes in
the order given. The header is padded with spaces to a multiple of 8 bytes, as the safetensors
library pads it, so the data starts 8-byte aligned (a reader that maps the file can use a
tensor in place when its offset suits its dtype)."""
import json
import struct

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32",
          torch.int64: "I64"}


def raw(t):
    """The bytes of tensor t as safetensors stores them (little-endian, row-major)."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # NumPy has no bfloat16: its bits as int16
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def st_write(path, tensors, meta=None):
    """Writes tensors (name -> torch tensor, in that order) to path; meta (str -> str) becomes
    the __metadata__ entry, first in the header."""
    header, blobs, off = {}, [], 0
    if meta:
        header["__metadata__"] = meta
    for name, t in tensors.items():
        b = raw(t)
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def st_write_f32(path, tensors):
    """st_write with every tensor as F32 (converted) and the metadata {"format": "pt"}."""
    st_write(path, {name: t.float() for name, t in tensors.items()}, {"format": "pt"})

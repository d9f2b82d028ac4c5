#!/usr/bin/env python3
"""Reference for tests/test_align.c: the token alignment method of FuseChat
(FuseChat/train/align_token_and_vocab.py: `dtw` with an edit-distance local cost over Python
strings, i.e. code points), re-implemented here in plain Python. Writes random token-sequence
pairs with the reference path and cost to tests/fixtures/align/dtw_ref.json.
Tie-breaking follows the reference: on equal predecessors prefer the diagonal, then (i-1, j),
then (i, j-1). Byte-fallback tokens are written as single bytes. A token that holds part of a
character (a byte >= 0x80 on its own) is compared on bytes with whatever it is paired with, so
it costs what its bytes differ (fc_token_distance); pairs of whole-character tokens keep
FuseChat's code-point distance.
Run by hand: python3 tests/ref/align_ref.py"""
import json
import os
import random


def lev(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def splits_char(tok):
    return isinstance(tok, list) and any(b >= 0x80 for b in tok)


def as_bytes(tok):
    return bytes(tok) if isinstance(tok, list) else tok.encode("utf-8")


def as_text(tok):
    # a byte-fallback token of ASCII bytes is those characters
    return bytes(tok).decode("ascii") if isinstance(tok, list) else tok


def token_distance(a, b):
    if splits_char(a) or splits_char(b):
        return lev(as_bytes(a), as_bytes(b))
    return lev(as_text(a), as_text(b))


def dtw(s1, s2):
    n, m = len(s1), len(s2)
    inf = float("inf")
    acc = [[inf] * (m + 1) for _ in range(n + 1)]
    acc[0][0] = 0
    for i in range(n):
        for j in range(m):
            acc[i + 1][j + 1] = token_distance(s1[i], s2[j]) + min(acc[i][j + 1], acc[i + 1][j], acc[i][j])
    i, j = n - 1, m - 1
    path = []
    while i > 0 or j > 0:
        path.append((i, j))
        diag = acc[i][j] if i > 0 and j > 0 else inf
        up = acc[i][j + 1] if i > 0 else inf
        left = acc[i + 1][j] if j > 0 else inf
        best = min(diag, up, left)
        if diag == best:
            i, j = i - 1, j - 1
        elif up == best:
            i -= 1
        else:
            j -= 1
    path.append((0, 0))
    path.reverse()
    return path, acc[n][m]


ALPHA = ["a", "b", "c", " ", "é", "你", "好", "\n", "th", "e", "😀"]


def random_tokens(rng, text):
    toks, k = [], 0
    while k < len(text):
        step = rng.randint(1, 4)
        toks.append(text[k:k + step])
        k += step
    return toks


def to_hex(tok):
    if isinstance(tok, list):
        return bytes(tok).hex()
    return tok.encode("utf-8").hex()


def main():
    rng = random.Random(1234)
    cases = []
    for c in range(60):
        text = "".join(rng.choice(ALPHA) for _ in range(rng.randint(2, 30)))
        src = random_tokens(rng, text)
        piv = random_tokens(rng, text)
        if c % 5 == 0:
            # byte-fallback: split one source token into its UTF-8 bytes
            k = rng.randrange(len(src))
            src = src[:k] + [[b] for b in src[k].encode("utf-8")] + src[k + 1:]
        path, cost = dtw(src, piv)
        cases.append({"src": [to_hex(t) for t in src], "piv": [to_hex(t) for t in piv],
                      "cost": cost, "path": path})
    out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "align", "dtw_ref.json")
    with open(out, "w") as f:
        json.dump(cases, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()

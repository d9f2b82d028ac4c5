#!/usr/bin/env python3
"""Python reference for bench/align.c: FuseChat's token alignment method (DTW over the full
matrix with edit distance as local cost, as in FuseChat/train/align_token_and_vocab.py, with a
pure-Python Levenshtein since the `editdistance` package is not a Debian package). Reads pairs of
lines (source tokens, pivot tokens; each token as hex bytes) and prints pivot tokens per second."""
import sys
import time


def lev(a, b):
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def dtw(s1, s2):
    inf = float("inf")
    n, m = len(s1), len(s2)
    mat = [[inf] * (m + 1) for _ in range(n + 1)]
    mat[0][0] = 0
    for i in range(n):
        for j in range(m):
            mat[i + 1][j + 1] = lev(s1[i], s2[j]) + min(mat[i][j + 1], mat[i + 1][j], mat[i][j])
    return mat[n][m]


def main():
    lines = open(sys.argv[1]).read().split("\n")
    pairs = []
    for k in range(0, len(lines) - 1, 2):
        dec = lambda ln: [bytes.fromhex(t).decode("utf-8", "replace") for t in ln.split(" ")]
        pairs.append((dec(lines[k]), dec(lines[k + 1])))
    t0 = time.process_time()
    tok = 0
    for s, p in pairs:
        dtw(s, p)
        tok += len(p)
    print(tok / (time.process_time() - t0))


if __name__ == "__main__":
    main()

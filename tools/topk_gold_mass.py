#!/usr/bin/env python3
"""How much of a top-K store's probability lies on the gold next token, per task family.

Reads the top-K stores of a fusion job (STORE/JOB/logits/*.topk and STORE/JOB/align/*.fused,
layout in src/fusion/fc_topk.h) and the fusion set, and prints for each store the mean
probability of the gold token over the response tokens, by the family of the conversation's
first question. A fused target can teach more than the gold answer only through the mass it
puts elsewhere; on single-answer tasks that mass is the sources' error.

Usage: tools/topk_gold_mass.py JOB_DIR FUSION.jsonl   (shards are the set's rows in order)
"""
import collections, glob, json, math, os, struct, sys


def read_store(path):
    b = open(path, 'rb').read()
    if b[:8] != b'FCTOPK\r\n':
        sys.exit(f'{path}: not a top-K store')
    _ver, idb, k, _vocab = struct.unpack_from('<4I', b, 8)
    n, _th, ioff = struct.unpack_from('<3Q', b, 24)
    offs = struct.unpack_from('<%dQ' % (n + 1), b, ioff)

    def ids(cnt, o):
        if idb == 2:
            return struct.unpack_from('<%dH' % cnt, b, o), o + 2 * cnt
        return [int.from_bytes(b[o + 3 * j:o + 3 * j + 3], 'little') for j in range(cnt)], o + 3 * cnt

    for e in range(n):
        o = offs[e]
        tn = struct.unpack_from('<I', b, o)[0]
        o += 16
        tok, o = ids(tn, o)
        mb = b[o:o + (tn + 7) // 8]
        o += (tn + 7) // 8
        top, o = ids(tn * k, o)
        lp = struct.unpack_from('<%dH' % (tn * k), b, o)
        s = c = 0.0
        # position i holds the distribution of token i + 1; a response token carries loss
        for i in range(tn - 1):
            if not (mb[(i + 1) // 8] >> ((i + 1) % 8)) & 1:
                continue
            g = tok[i + 1]
            s += sum(math.exp(-lp[i * k + j] / 2048.0) for j in range(k) if top[i * k + j] == g and lp[i * k + j] != 0xffff)
            c += 1
        yield s, c


def main():
    if len(sys.argv) != 3 or sys.argv[1] in ('-h', '--help'):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) == 2 else 2)
    job, data = sys.argv[1:]
    fam = [json.loads(l)['family'] for l in open(data)]
    stores = collections.defaultdict(list)
    for p in sorted(glob.glob(os.path.join(job, 'logits', '*.topk')) + glob.glob(os.path.join(job, 'align', '*.fused'))):
        name = os.path.basename(p).split('.shard-')[0] + ('.fused' if p.endswith('.fused') else '')
        stores[name].append(p)
    fams = sorted(set(fam))
    print('%-18s' % 'store' + ''.join('%10s' % f for f in fams))
    for name, paths in stores.items():
        agg = collections.defaultdict(lambda: [0.0, 0.0])
        row = 0
        for p in paths:
            for s, c in read_store(p):
                agg[fam[row]][0] += s
                agg[fam[row]][1] += c
                row += 1
        print('%-18s' % name + ''.join('%10.3f' % (agg[f][0] / agg[f][1]) if agg[f][1] else '%10s' % '-' for f in fams))


if __name__ == '__main__':
    main()

#!/bin/sh
# Data-parallel training figures (issue 16), one run, medians of 5 where timed (the two
# configurations alternate, so load from other work falls on both alike):
#  1. efficiency: 2 ranks x 1 thread against 1 rank x 2 threads, same global batch (ms/step ratio)
#  2. bytes sent per step by a rank against the parameter bytes
#  3. peak RSS per rank for 1, 2 and 4 ranks (ZeRO-1) on a ~110M-parameter model
#  4. with the Slurm packages: time from fusectl slurm up to the first leased task (the Slurm
#     test's figure, tests/slurm/slurm-job.sh)
# Usage: bench/dist.sh BUILD_DIR   (needs mpirun; uses /tmp; at most ~6 GiB in step 3)
# BIGMEM_LOCK=FILE: step 3 holds flock FILE (one big-memory job at a time on a shared machine)
set -eu
B=$(cd "$1" && pwd)
F="$B/tools/fusectl"
HERE=$(cd "$(dirname "$0")/.." && pwd)
TOK="$HERE/tests/fixtures/tok/trained_byte/tokenizer.json"
tmp=$(mktemp -d /tmp/fc-bench-dist.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$F" gen-data --out "$tmp/data.jsonl" --count 256 >/dev/null 2>&1
config() { # FILE HIDDEN INTER LAYERS HEADS VOCAB
  printf '{"model_type": "llama", "hidden_size": %d, "intermediate_size": %d, "num_hidden_layers": %d,
 "num_attention_heads": %d, "num_key_value_heads": %d, "vocab_size": %d, "rope_theta": 10000.0,
 "rms_norm_eps": 1e-05, "tie_word_embeddings": false, "hidden_act": "silu",
 "max_position_embeddings": 512, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}\n' \
    "$2" "$3" "$4" "$5" "$5" "$6" >"$1"
}
median() { sort -n | awk '{v[NR] = $1} END {print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ms() { sed -n 's/^trained .* \([0-9.]*\) ms\/step;.*/\1/p'; }
# 1 + 2: a 256-wide model, batch 8 x 128 tokens, 6 steps
config "$tmp/small.json" 256 688 4 8 4096
A="--config $tmp/small.json --tokenizer $TOK --data $tmp/data.jsonl --steps 6 --batch-size 8 --seq-len 128 --quiet"
one="" two=""
for i in 1 2 3 4 5; do
  # shellcheck disable=SC2086
  one="$one $(OPENBLAS_NUM_THREADS=2 "$F" train $A --threads 2 --out "$tmp/o1" | ms)"
  # shellcheck disable=SC2086
  out=$(OPENBLAS_NUM_THREADS=1 "$F" train $A --threads 1 --ranks 2 --out "$tmp/o2")
  two="$two $(echo "$out" | ms)"
  rm -rf "$tmp/o1" "$tmp/o2"
done
m1=$(echo "$one" | tr ' ' '\n' | grep . | median)
m2=$(echo "$two" | tr ' ' '\n' | grep . | median)
echo "1 rank x 2 threads: $m1 ms/step; 2 ranks x 1 thread: $m2 ms/step (medians of 5: $one /$two)"
echo "data-parallel efficiency (1x2 time / 2x1 time): $(echo "scale=3; $m1 / $m2" | bc)"
echo "$out" | grep "data parallel"
comm=$(echo "$out" | sed -n 's/.*communication \([0-9.]*\) ms\/step of \([0-9.]*\).*/\1 \2/p')
# shellcheck disable=SC2086
set -- $comm
echo "communication share of a 2-rank step (last run): $(echo "scale=3; $1 / $2" | bc) (what overlapping it with the backward pass could hide at most)"
bytes=$(echo "$out" | sed -n 's/.*sent \([0-9]*\) bytes per step (\([0-9]*\) parameters.*/\1 \2/p')
set -- $bytes
echo "bytes sent per step by one rank / parameter bytes: $(echo "scale=3; $1 / ($2 * 4)" | bc) (2 ranks: reduce-scatter + all-gather, each (R-1)/R of the floats)"
# 3: ~110M parameters, peak RSS of each rank
if [ -n "${BIGMEM_LOCK:-}" ]; then
  exec 9>"$BIGMEM_LOCK"
  flock 9
fi
config "$tmp/big.json" 768 2048 12 12 16000
A="--config $tmp/big.json --tokenizer $TOK --data $tmp/data.jsonl --steps 2 --batch-size 4 --seq-len 32 --quiet"
for r in 1 2 4; do
  if [ $r -eq 1 ]; then
    # shellcheck disable=SC2086
    /usr/bin/time -f "rss %M" -o "$tmp/rss.1" "$F" train $A --out "$tmp/b1" >"$tmp/b.out"
    cat "$tmp/rss.1" >"$tmp/rss"
  else
    # shellcheck disable=SC2086
    mpirun -n $r --bind-to none --oversubscribe --allow-run-as-root \
      sh -c "/usr/bin/time -f 'rss %M' -o $tmp/rss.\$OMPI_COMM_WORLD_RANK $F train $A --out $tmp/b$r" >"$tmp/b.out"
    cat "$tmp"/rss.[0-9]* >"$tmp/rss"
  fi
  params=$(sed -n 's/.*(\([0-9]*\) parameters.*/\1/p' "$tmp/b.out")
  echo "$r ranks: peak RSS per rank (MiB): $(awk '{printf "%d ", $2 / 1024}' "$tmp/rss")${params:+ ($params parameters)}"
  rm -rf "$tmp"/b$r "$tmp"/rss*
done
[ -z "${BIGMEM_LOCK:-}" ] || exec 9>&-
# 4: the local Slurm (skipped without the packages)
if command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ]; then
  sh "$HERE/tests/slurm/slurm-job.sh" "$B" 2>&1 | grep "time from fusectl slurm up" || echo "slurm: the test did not print its time"
else
  echo "slurm: not installed (FUSECHAT_SETUP_SLURM=1 tools/setup.sh): no time to the first leased task"
fi

// Reference for bench/tokenizer.c: Hugging Face tokenizers (Rust, via the Node bindings
// @anush008/tokenizers) encoding the same corpus in the same ~4 KB documents on one thread.
//   ./build/bench/bench_tokenizer --write-corpus /tmp/corpus.txt
//   RAYON_NUM_THREADS=1 NODE_PATH=/tmp/tokref/node_modules node bench/tokenizer_ref.js /tmp/corpus.txt
const fs = require('fs');
const { Tokenizer } = require('@anush008/tokenizers');
const corpus = fs.readFileSync(process.argv[2]);
const fx = process.env.FC_FIXTURES || require('path').join(__dirname, '..', 'tests', 'fixtures');
const names = (process.argv[3] || 'llama2,qwen3,gpt2,llama3').split(',');
const docs = [];
for (let pos = 0; pos < corpus.length; ) {
  let end = Math.min(pos + 4096, corpus.length);
  while (end < corpus.length && corpus[end - 1] !== 10) end++;
  docs.push(corpus.slice(pos, end).toString('utf8'));
  pos = end;
}
const mb = corpus.length / 1e6;
(async () => {
  for (const name of names) {
    const tok = Tokenizer.fromFile(`${fx}/tok/${name}/tokenizer.json`);
    let ntok = 0;
    const t0 = process.hrtime.bigint();
    for (const d of docs) ntok += (await tok.encode(d, null, { addSpecialTokens: false })).getIds().length;
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(`HF ${name.padEnd(10)} encode ${(mb / s).toFixed(1)} MB/s  ${(ntok / s).toFixed(0)} tokens/s  (${ntok} tokens)`);
  }
})();

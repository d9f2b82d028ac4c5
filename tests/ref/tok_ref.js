// Reference token ids from the Hugging Face `tokenizers` library (Rust, through the Node
// bindings @anush008/tokenizers) for the tokenizer.json files under tests/fixtures/tok/.
// Run by hand (not in CI):
//   npm install --prefix /tmp/tokref @anush008/tokenizers@0.6.0 @anush008/tokenizers-linux-x64-gnu
//   NODE_PATH=/tmp/tokref/node_modules node tests/ref/tok_ref.js tests/fixtures/tok
// Writes DIR/ref.json: the texts, and per tokenizer the ids with and without the
// post-processor's special tokens, the ids with special tokens treated as plain text, and the
// decoded text. "Plain text" is HF's encode_special_tokens, which the Node bindings do not
// expose: we load a copy of tokenizer.json whose special added tokens have contents that never
// occur in text, which is the same thing (their text then reaches the normalizer and model like
// any text). Removing them instead would renumber the remaining added tokens.
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('@anush008/tokenizers');

const dir = process.argv[2] || 'tests/fixtures/tok';
const names = (process.argv[3] || 'llama2,qwen3,gpt2,llama3,trained_byte,trained_sp,added_sp,added_byte,meta_first,meta_always_split').split(',');

// Deterministic pseudo-random strings from a pool of awkward pieces.
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const pool = [
  ' ', ' ', ' ', '  ', '   ', '\n', '\n\n', '\t', '\r\n', 'the', 'The', 'hello', 'world', "'s", "'LL",
  "don't", '123', '4567890', '3.14', '!', '?!', '...', '(', ')', '{', '}', '<', '>', '</', '==',
  '->', '_', 'foo_bar', 'x', 'Ünïcödé', 'é', 'e\u0301', 'A\u030a', '\u00a0', '\u3000', '\u2028',
  '\u0085', '中文', '日本語のテキスト', '한국어', 'Привет', 'мир', 'مرحبا', 'बहुत', 'नमस्ते',
  'ไทย', 'Ελληνικά', '😀', '👍🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈', '∑', '½', '²', 'Ⅻ', '٣', '\u200b',
  '<s>', '</s>', '<unk>', '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<think>', '▁', 'Ġ',
  '<0x41>', 'http://example.com/a?b=c', ' <mask> ', '<mask>', '[SEP]  ', '<tool>', ' <tool> ', 'word',
  ' word ', 'swordfish', '<|im_start|>x', '\u3000<mask>\u3000', '    def f(x):', 'return x+1;', '#include <stdio.h>',
];
function randomText(r) {
  const n = 1 + Math.floor(r() * 12);
  let s = '';
  for (let i = 0; i < n; i++) s += pool[Math.floor(r() * pool.length)];
  return s;
}

const texts = [
  '',
  'Hello world',
  ' Hello world',
  '   leading spaces',
  'trailing spaces   ',
  'Hello\nworld\n\nnew   paragraph\t\ttabs',
  'I\'m sure they\'ll say it\'s fine, we\'ve been told we\'d go.',
  'Numbers: 1 12 123 1234 12345 123456789012345 3.14159 1,000,000',
  '中文分词测试，这是一个句子。',
  '日本語の文章です。カタカナとひらがな。',
  'Съешь же ещё этих мягких французских булок, да выпей чаю.',
  'مرحبا بالعالم، هذا نص عربي.',
  'हिन्दी में एक वाक्य है।',
  'Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷 ❤️',
  'Combining: e\u0301 A\u030a n\u0303 and precomposed é Å ñ',
  '<s>[INST] What is 2+2? [/INST] 4</s>',
  '<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n',
  'Text with <|endoftext|> inside and <think>reasoning</think> too',
  '    def add(a, b):\n        return a + b\n\nprint(add(2, 3))\n',
  '#include <stdio.h>\nint main(void) { printf("%d\\n", 42); return 0; }',
  'Mixed: The café costs €3.50 — naïve coöperation, Straße, ﬁ ligature, ＡＢＣ fullwidth',
  'Whitespace \u00a0nbsp\u3000ideographic\u2028line-sep\u0085nel end',
  '\n\n\n',
  ' ',
  '\t',
  'a',
  '▁already▁has▁metaspace and Ġbytelevel chars',
  '<0x41> is not a byte token in text',
  'URL https://example.com/path?query=1&x=y#frag and email a.b@c.org',
  // Llama-3 has ignore_merges: these words are vocabulary entries BPE would split differently.
  'Vietnamese: việc hợp nhiều điều Việt; Czech jeho; Persian ایران',
  'A long line: ' + 'the quick brown fox jumps over the lazy dog; '.repeat(50) + ' Ünïcödé naïve 中文 😀 12345 '.repeat(20),
];
const r = rng(12345);
for (let i = 0; i < 150; i++) texts.push(randomText(r));

async function main() {
  const out = { generator: 'tests/ref/tok_ref.js with @anush008/tokenizers 0.6.0', texts, tokenizers: {} };
  for (const name of names) {
    const file = path.join(dir, name, 'tokenizer.json');
    const json = JSON.parse(fs.readFileSync(file, 'utf8'));
    const tok = Tokenizer.fromFile(file);
    const plainJson = JSON.parse(JSON.stringify(json));
    // Special tokens that are also model vocabulary entries (Llama's <s>) are renamed there
    // too, or HF would give them new ids; no merge may then use them.
    for (const a of plainJson.added_tokens) {
      if (!a.special) continue;
      const fresh = '\u0001\u0002never' + a.id;
      const v = plainJson.model.vocab;
      if (Object.prototype.hasOwnProperty.call(v, a.content)) {
        const usedInMerge = plainJson.model.merges.some((m) =>
          (Array.isArray(m) ? m : m.split(' ')).includes(a.content));
        if (usedInMerge) throw new Error(`${name}: special ${a.content} is used by a merge`);
        v[fresh] = v[a.content];
        delete v[a.content];
      }
      a.content = fresh;
    }
    const plain = Tokenizer.fromString(JSON.stringify(plainJson));
    const res = { with_special: [], no_special: [], plain: [], decoded: [], decoded_skip: [] };
    for (const t of texts) {
      const e1 = await tok.encode(t, null, { addSpecialTokens: true });
      const e2 = await tok.encode(t, null, { addSpecialTokens: false });
      const e3 = await plain.encode(t, null, { addSpecialTokens: false });
      res.with_special.push(e1.getIds());
      res.no_special.push(e2.getIds());
      res.plain.push(e3.getIds());
      res.decoded.push(await tok.decode(e1.getIds(), false));
      res.decoded_skip.push(await tok.decode(e1.getIds(), true));
    }
    out.tokenizers[name] = res;
  }
  fs.writeFileSync(path.join(dir, 'ref.json'), JSON.stringify(out));
  console.log('wrote', path.join(dir, 'ref.json'), texts.length, 'texts');
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});

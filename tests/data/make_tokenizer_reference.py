#!/usr/bin/env python3
"""Writes tests/data/tokenizer_reference/: two small tokenizers and what the Python
packages compute with them, for tests/models/test_tokenizers.cpp. Run by hand, output
committed; the tests only read the files, they never run Python.

    python3 tests/data/make_tokenizer_reference.py        (CPU; a few seconds)

Written with tokenizers 0.23.3 and sentencepiece 0.2.3 (versions also in cases.json).

  bpe/tokenizer.json       byte-level BPE as Llama 3's: the Llama 3 Split regex, ByteLevel,
                           BPE with ignore_merges, merges as ["a","b"] pairs, specials
                           <|begin_of_text|>... appended after the BPE vocabulary, one
                           non-special added token, a TemplateProcessing BOS post-processor
  bpe/tokenizer_config.json  bos/eos names, as a model directory has them
  bpe_string_merges/tokenizer.json  the same with merges written as "a b" strings
  gpt2/tokenizer.json      GPT-2 style: Split of single digits, then ByteLevel with its own
                           regex and add_prefix_space, merges not ignored, no template;
                           added tokens with lstrip, rstrip, single_word, and a non-special
                           one inside a special one
  sp/tokenizer.model       SentencePiece BPE with Llama 2's settings (byte fallback,
                           split digits, dummy prefix, identity normalization)
  cases.json               per text (hex of its UTF-8 bytes, possibly invalid):
    bpe_plain   encode with special-token text encoded as text (encode_special_tokens)
    bpe_hf      encode(text, add_special_tokens=False): special-token text recognised
    bpe_hf_bos  encode(text, add_special_tokens=True): and the template's BOS
    bpe_decode  decode(bpe_hf_bos, skip_special_tokens=False)
    sp          sentencepiece encode(text);  sp_decode  decode(sp)
    gpt2_plain, gpt2_hf, gpt2_decode  as the bpe ones, with the gpt2 tokenizer
  Invalid UTF-8 is what the packages cannot take (they take str): the reference text is
  bytes.decode("utf-8", "replace"), which the C++ tokenizers must do the same way.
  decode_cases.json: id lists (single bytes of a multi-byte character, specials) and
  their decodes by both packages.
"""
import json
import os
import random

import sentencepiece as spm
import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from tokenizers import processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tokenizer_reference")

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>"]

# Training text: several scripts, numbers, code, contractions; deterministic.
WORDS = ("the quick brown fox jumps over the lazy dog it's we're they'll I've you'd "
         "don't hello world token tokenizer training data model learning rate "
         "Größe Straße café naïve résumé über "
         "привет мир данные обучение модель "
         "你好 世界 数据 模型 训练 日本語 テキスト です "
         "안녕하세요 세계 "
         "مرحبا بالعالم नमस्ते दुनिया "
         "def main(): return x + y; int i = 0; for (;;) {} "
         "😀 🎉 👍 🇫🇷").split()


def training_lines(n=3000, seed=0):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        k = rng.randint(3, 14)
        parts = []
        for _ in range(k):
            r = rng.random()
            if r < 0.1:
                parts.append(str(rng.randint(0, 10**rng.randint(1, 7))))
            else:
                parts.append(rng.choice(WORDS))
        sep = rng.choice([" ", " ", " ", "  ", "\n", "\t"])
        lines.append(sep.join(parts))
    return lines


TEXTS = [
    "Hello world",
    "I'm here, you're there; they'll come, we've seen, it's done, I'd go. DON'T SHOUT, He'S",
    "Numbers: 1 12 123 1234 12345678 3.14159 -42 1,000,000 ٣٤٥ ५६७",
    "whitespace   runs\t\ttabs\n\n\nnewlines  \n  trailing   ",
    "   leading spaces and a lone\r\ncarriage return\r\n",
    "emoji 😀🎉 👍🏽 family 👨‍👩‍👧 flag 🇫🇷 heart ❤️",
    "中文：你好，世界。日本語のテキストです。한국어 텍스트",
    "Größe Straße café naïve résumé über ÇA ÉTÉ",
    "Привет, мир! Данные и модель.",
    "مرحبا بالعالم नमस्ते दुनिया",
    "def main():\n    return x + y  # comment\n\tint i = 0;",
    "<|begin_of_text|>special text<|eot_id|> inside<|start_header_id|>user<|end_header_id|>\n\nhi",
    "added token [NEW] here and[NEW]glued",
    "",
    " ",
    "\n",
    "no-break\u00a0space, ideographic\u3000space, NEL\u0085here, line\u2028sep",
    "zero\u200bwidth and combining e\u0301 a\u0308",
    "separators\x1c\x1d\x1e\x1f x\u180ey\ufeffz \u205f\u1680\u2000\u200a w\x0b\x0cv \r\n\r\n  \t",
    "rare 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and ᚠᚢᚦ runes",
    "MixedCASE words ALLCAPS camelCase snake_case kebab-case",
    "quotes \"double\" 'single' `back` «guillemets» “curly”",
    "url https://example.com/path?q=1&r=2#frag email a.b@c.de",
    "repeated aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!!!!!!! ............",
]
TEXTS += [
    "<mask> masked, a  <mask>b and\t<mask>",
    "[WORD] x[WORD] [WORD]y ([WORD])",
    "<rs>   after <rs>x",
    "<|endoftext|>end ending <|endoftext|>",
    "1234 digits 5 6",
    "Donaudampfschifffahrtsgesellschaftskapitänswitwe Rindfleischetikettierungsüberwachungsaufgabenübertragungsgesetz",
]
RAW = [t.encode("utf-8") for t in TEXTS] + [
    b"invalid \xff\xfe bytes",
    b"truncated \xe4\xbd end",
    b"overlong \xc0\x80 and surrogate \xed\xa0\x80 x",
    b"\xf0\x9f\x98 cut emoji then \xf4\x90\x80\x80 too high",
    b"lone continuation \x80\x81\xbf ok",
]


def byte_level(text):
    """GPT-2's bytes_to_unicode applied to text's UTF-8 bytes."""
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, map(chr, cs)))
    return "".join(table[b] for b in text.encode("utf-8"))


def build_bpe(lines):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    # Whole words in the vocab that no merge sequence reaches (Llama 3 has such tokens):
    # only ignore_merges makes them one token. Added after the trained vocab, before the
    # added tokens (the package numbers added tokens after the model's vocab).
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for word in [" Straße", " aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "Numbers", " Grö"]:
        if byte_level(word) not in vocab:
            vocab[byte_level(word)] = len(vocab)
    tok = Tokenizer.from_str(json.dumps(spec))
    # Specials after the BPE vocabulary, as in Llama 3; one non-special added token.
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.add_tokens([AddedToken("[NEW]", special=False)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    return tok


def build_gpt2(lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False),
                            AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    tok.add_tokens([AddedToken("[WORD]", single_word=True, normalized=False),
                    AddedToken("<rs>", rstrip=True, normalized=True),
                    AddedToken("end", normalized=False)])
    return tok


def main():
    os.makedirs(os.path.join(OUT, "bpe"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "bpe_string_merges"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "sp"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "gpt2"), exist_ok=True)
    lines = training_lines()

    tok = build_bpe(lines)
    bpe_path = os.path.join(OUT, "bpe", "tokenizer.json")
    tok.save(bpe_path)
    with open(bpe_path) as f:
        spec = json.load(f)
    assert spec["model"]["ignore_merges"] is True
    assert isinstance(spec["model"]["merges"][0], list)
    with open(os.path.join(OUT, "bpe", "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=1)
    spec["model"]["merges"] = [" ".join(m) for m in spec["model"]["merges"]]
    str_path = os.path.join(OUT, "bpe_string_merges", "tokenizer.json")
    with open(str_path, "w") as f:
        json.dump(spec, f, ensure_ascii=False)
    tok_str = Tokenizer.from_file(str_path)
    gpt2 = build_gpt2(lines)
    gpt2.save(os.path.join(OUT, "gpt2", "tokenizer.json"))

    corpus = os.path.join(OUT, "sp_corpus.txt")
    with open(corpus, "w") as f:
        f.write("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(OUT, "sp", "tokenizer"), model_type="bpe",
        vocab_size=500, byte_fallback=True, split_digits=True, character_coverage=0.99,
        add_dummy_prefix=True, remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2)
    os.remove(corpus)
    os.remove(os.path.join(OUT, "sp", "tokenizer.vocab"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(OUT, "sp", "tokenizer.model"))

    cases = []
    for raw in RAW:
        text = raw.decode("utf-8", "replace")
        tok.encode_special_tokens = True
        plain = tok.encode(text, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        hf = tok.encode(text, add_special_tokens=False).ids
        hf_bos = tok.encode(text, add_special_tokens=True).ids
        assert tok_str.encode(text, add_special_tokens=True).ids == hf_bos
        ids = sp.encode(text)
        gpt2.encode_special_tokens = True
        g_plain = gpt2.encode(text, add_special_tokens=False).ids
        gpt2.encode_special_tokens = False
        g_hf = gpt2.encode(text, add_special_tokens=True).ids
        cases.append({"gpt2_plain": g_plain, "gpt2_hf": g_hf,
                      "gpt2_decode": gpt2.decode(g_hf, skip_special_tokens=False),
                      "hex": raw.hex(), "bpe_plain": plain, "bpe_hf": hf, "bpe_hf_bos": hf_bos,
                      "bpe_decode": tok.decode(hf_bos, skip_special_tokens=False),
                      "sp": ids, "sp_decode": sp.decode(ids)})

    # Decodes of id lists that cut characters apart or hold specials.
    emoji = tok.encode("😀", add_special_tokens=False).ids
    byte_ids = [tok.token_to_id(c) for c in ["ð", "Ł"]]  # bytes F0 9F: half an emoji
    decode_cases = {
        "bpe": [ids for ids in [byte_ids, byte_ids + emoji, emoji[:1], [tok.token_to_id("<|eot_id|>")] + emoji,
                                [tok.token_to_id("[NEW]"), tok.token_to_id("Ġ")]] if None not in ids],
        "sp": [[3 + 0xF0, 3 + 0x9F], [1, 3 + 0xE4, 100, 2], [5, 6, 7, 8, 9]],
    }
    decode_out = {
        "bpe": [{"ids": ids, "text": tok.decode(ids, skip_special_tokens=False)} for ids in decode_cases["bpe"]],
        "sp": [{"ids": ids, "text": sp.decode(ids)} for ids in decode_cases["sp"]],
    }
    meta = {"tokenizers": tokenizers.__version__, "sentencepiece": spm.__version__,
            "bpe_vocab": tok.get_vocab_size(with_added_tokens=True), "sp_vocab": sp.get_piece_size()}
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"meta": meta, "cases": cases, "decode": decode_out}, f, ensure_ascii=False, indent=0)
    print("wrote", OUT, meta)


if __name__ == "__main__":
    main()

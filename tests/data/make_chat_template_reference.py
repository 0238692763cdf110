#!/usr/bin/env python3
"""Writes tests/data/chat_template_reference.json: conversations rendered by transformers'
apply_chat_template with the chat_template strings of Meta's Llama models, for
tests/models/test_chat_template.cpp. Run by hand (CPU, seconds), output committed.

    python3 tests/data/make_chat_template_reference.py

The templates are in tests/data/chat_templates/*.jinja. Honest provenance: this machine
has no network, so the official tokenizer_config.json files could not be downloaded.
llama2.jinja (Llama-2-*-chat-hf), llama3.jinja (Meta-Llama-3-*-Instruct) and
llama3.2.jinja (Llama-3.2-1B/3B-Instruct) are the published chat_template strings as
quoted verbatim in public source code (a chat-template table that maps each meta-llama
model to its template), JSON-unescaped; llama3.1.jinja (Llama-3.1-*-Instruct, and
Llama-3.3-70B-Instruct, which ships the same template) is the published 3.1/3.3 string
from the same table. Only their non-tool paths are rendered here: train70b renders
system, user and assistant messages (no tools).

Cases per template: "text" is apply_chat_template(tokenize=False); "ids" with the small
tokenizers of tests/data/chat_template_tokenizers/ (copies of tokenizer_reference/'s): for Llama 3 apply_chat_template(tokenize=True)
with bpe/tokenizer.json (the text encoded with add_special_tokens=False); for Llama 2 see
llama2_ids below (sp/tokenizer.model). Llama 3.2 is rendered with date_string="01 Dec 2026" passed
in (the template otherwise calls strftime_now("%d %b %Y")); Llama 3.1 ignores the date.
"""
import json
import os
import re

import sentencepiece as spm

import transformers
from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "chat_templates")
OUT = os.path.join(HERE, "chat_template_reference.json")
# Copies of the small tokenizers of tests/data/tokenizer_reference (written by
# make_tokenizer_reference.py), kept here so that these ids stay valid when those change.
BPE = os.path.join(HERE, "chat_template_tokenizers", "bpe", "tokenizer.json")
SP = os.path.join(HERE, "chat_template_tokenizers", "sp", "tokenizer.model")

S = lambda c: {"role": "system", "content": c}
U = lambda c: {"role": "user", "content": c}
A = lambda c: {"role": "assistant", "content": c}

CONVERSATIONS = [
    [U("Hello!"), A("Hi there.")],
    [S("You are terse."), U("What is 2+2?"), A("4")],
    [S("Be kind."), U("First question"), A("First answer"), U("Second"), A("Second answer")],
    [U("  padded user \n"), A("\n\tpadded answer  ")],
    [S("  spaced system  "), U("x"), A("")],
    [U("Ünïcödé 你好 😀"), A("Größe: ३ ٣ 3")],
    [U("nbsp\u00a0and ideographic space\u3000"), A("\u3000trimmed\u00a0")],
    [S(""), U("empty system"), A("ok")],
    [U("two"), A("turns"), U("three"), A("turns!")],
    [U("multi\nline\n\nuser"), A("multi\n\nline\nanswer")],
    [U("it's 12345 o'clock"), A("we'll see")],
    # Special-token text inside content is the special token, as transformers tokenizes it.
    [U("spell <|eot_id|> and <s> here"), A("ok <|begin_of_text|>")],
]
GENERATION = [[S("sys"), U("prompt only")], [U("prompt only")]]


def main():
    bpe = PreTrainedTokenizerFast(tokenizer_file=BPE, bos_token="<|begin_of_text|>",
                                  eos_token="<|end_of_text|>")
    # Llama 2: the text from transformers; transformers 5's LlamaTokenizer cannot load a
    # bare tokenizer.model here, so the ids are Llama 2's tokenizer rule written out: the
    # text split at <s> and </s> (their ids 1 and 2), each piece encoded by sentencepiece
    # with its dummy prefix, as the legacy LlamaTokenizer and Llama-2's tokenizer.json
    # (a Prepend normalizer applied per piece between special tokens) both do.
    llama2_text = PreTrainedTokenizerFast(tokenizer_file=BPE, bos_token="<s>", eos_token="</s>")
    sp = spm.SentencePieceProcessor(model_file=SP)

    def llama2_ids(text):
        ids = []
        for piece in re.split(r"(<s>|</s>)", text):
            if piece == "<s>":
                ids.append(1)
            elif piece == "</s>":
                ids.append(2)
            elif piece:
                ids += sp.encode(piece)
        return ids

    out = {"transformers": transformers.__version__, "templates": {}}
    for name in ["llama3", "llama3.1", "llama3.2", "llama2"]:
        template = open(os.path.join(TEMPLATES, name + ".jinja")).read()
        tok = llama2_text if name == "llama2" else bpe
        extra = {"date_string": "01 Dec 2026"} if name == "llama3.2" else {}
        cases = []
        for gen, convs in [(False, CONVERSATIONS), (True, GENERATION)]:
            for messages in convs:
                kw = dict(chat_template=template, add_generation_prompt=gen, **extra)
                text = tok.apply_chat_template(messages, tokenize=False, **kw)
                if name == "llama2":
                    ids = llama2_ids(text)
                else:
                    ids = tok.apply_chat_template(messages, tokenize=True, **kw)
                    if hasattr(ids, "keys"):
                        ids = ids["input_ids"]
                    ids = list(ids)
                    assert ids == tok.encode(text, add_special_tokens=False)
                cases.append({"messages": messages, "add_generation_prompt": gen,
                              "text": text, "ids": ids})
        out["templates"][name] = {"bos": tok.bos_token, "cases": cases}
    with open(OUT, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()

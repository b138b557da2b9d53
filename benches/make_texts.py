#!/usr/bin/env python3
"""Writes benches/texts.json: the fixed texts every latency benchmark embeds.

The texts are drawn from a fixed word list with a fixed linear congruential generator, so the
file is reproducible byte for byte: `python3 benches/make_texts.py` rewrites the same file.
Keys: `short` ("Hello, world!"), `medium` (50 words), `long` (450 words), `batch32`
(32 texts of 20 to 60 words).
"""
import json
import os

WORDS = (
    "the of and to in is was for on are with as by at from that this be or an have it not "
    "but which one all were when there can more will their has if about out up into been "
    "other time some what would so these two may then its first any like over only new "
    "such most also after them than many where before through between each under while "
    "water system data model vector search index query memory engine database cluster "
    "result language window token embedding server request network storage compute "
    "river mountain city garden market station library museum harbour bridge forest "
    "quickly slowly carefully early later often always never rarely together apart "
    "small large bright quiet green ancient modern simple complex narrow distant local "
    "build measure travel explain compare follow return improve describe observe store "
    "train morning evening winter summer record letter number answer question picture "
    "people family teacher doctor farmer student engineer writer painter driver sailor"
).split()


class Lcg:
    """Numerical Recipes' 32-bit LCG: tiny, portable, deterministic."""

    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFF

    def next(self, bound):
        self.state = (1664525 * self.state + 1013904223) & 0xFFFFFFFF
        return (self.state >> 8) % bound


def sentence_text(rng, words):
    out = []
    since_stop = 0
    for i in range(words):
        word = WORDS[rng.next(len(WORDS))]
        if since_stop == 0:
            word = word.capitalize()
        since_stop += 1
        end = i == words - 1 or (since_stop >= 6 and rng.next(5) == 0)
        if end:
            word += "."
            since_stop = 0
        elif rng.next(9) == 0:
            word += ","
        out.append(word)
    return " ".join(out)


def main():
    rng = Lcg(20250101)
    texts = {
        "short": "Hello, world!",
        "medium": sentence_text(rng, 50),
        "long": sentence_text(rng, 450),
        "batch32": [sentence_text(rng, 20 + rng.next(41)) for _ in range(32)],
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "texts.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(texts, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

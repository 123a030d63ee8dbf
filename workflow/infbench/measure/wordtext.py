"""Prompt text of an exact token count, rebuilt the same on any machine without the tokenizer.

Tokenizer-exact prompts (shared prefix, fixed-size synthetic, trace replay) are made of *words*: words
that the model's tokenizer reads as exactly one token both alone and after a space, so that words
joined by single spaces are exactly one token each (pipeline/requestprep.py finds them with the
tokenizer and checks that property on long seeded texts). The prepared request file keeps only the
word list and, per request, which words go where; this module turns that into text, in the bench job
(which has no tokenizer) as in the prepare step.

A request's content is a list of *runs* `(block, first, count)`: the words at positions first ...
first + count - 1 of block `block`. The word at (block, position) depends only on the seed, the block
and the position, so equal blocks give identical text (a trace's equal hash ids, a shared prefix's
group) and requests that share their leading blocks share a token prefix.

Content modes: `random` draws each word from the list by a hash of (seed, block, position); `text`
reads the list (words of a real text, in order) from a place the block's hash picks, so a block is a
run of real text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONTENT_MODES = ("random", "text")

Run = tuple[int, int, int]  # (block, first position, count)

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over an array of uint64 (wraps modulo 2^64, as it should)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class WordText:
    """The words of one tokenizer and how they are drawn; `render(runs)` gives a content string.

    The word at (block, position) is words[(offset(block) + step(position)) % len(words)]: offset is a
    hash of the seed and the block; step is a hash of the position in `random` mode (so a block reads
    as random words, each block rotated by its offset) and the position itself in `text` mode (so a
    block reads the list in order from its offset). Both are table look-ups, not a hash per word:
    rendering a whole production trace takes seconds."""

    words: tuple[str, ...]
    seed: int = 0
    content: str = "random"  # random | text

    def __post_init__(self) -> None:
        if self.content not in CONTENT_MODES:
            raise ValueError(f"content must be one of {', '.join(CONTENT_MODES)}, got {self.content!r}")
        if not self.words:
            raise ValueError("no words to build prompts from")
        # Each word with its leading space, as bytes: a run of words is one join, the first space dropped.
        spaced = np.array([b" " + w.encode() for w in self.words], dtype=object)
        object.__setattr__(self, "_spaced", spaced)
        object.__setattr__(self, "_steps", np.zeros(0, dtype=np.int64))

    def _step(self, count: int) -> np.ndarray:
        """step(position) for positions 0 .. count - 1 (grown on demand, kept)."""
        if len(self._steps) < count:
            positions = np.arange(max(count, 2 * len(self._steps), 1024), dtype=np.uint64)
            size = np.uint64(len(self.words))
            steps = _mix(positions + _GOLDEN) % size if self.content == "random" else positions % size
            object.__setattr__(self, "_steps", steps.astype(np.int64))
        return self._steps

    def word_indexes(self, runs: Sequence[Run]) -> np.ndarray:
        """Index into `words` of every word of the runs, in order."""
        if not runs:
            return np.zeros(0, dtype=np.int64)
        blocks = np.array([r[0] for r in runs], dtype=np.uint64)
        firsts = np.array([r[1] for r in runs], dtype=np.int64)
        counts = np.array([r[2] for r in runs], dtype=np.int64)
        if (counts < 0).any() or (firsts < 0).any():
            raise ValueError("runs must have non-negative positions and counts")
        total = int(counts.sum())
        # Position of each word within its block: first + 0, 1, ... per run, all runs at once.
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        positions = np.arange(total, dtype=np.int64) - starts + np.repeat(firsts, counts)
        size = len(self.words)
        seed = np.uint64(self.seed & 0xFFFF_FFFF_FFFF_FFFF)
        offsets = (_mix(blocks * _GOLDEN + seed) % np.uint64(size)).astype(np.int64)
        steps = self._step(int((firsts + counts).max()))
        return (np.repeat(offsets, counts) + steps[positions]) % size

    def render(self, runs: Sequence[Run]) -> str:
        """The content text: the runs' words joined by single spaces (one token per word)."""
        indexes = self.word_indexes(runs)
        if indexes.size == 0:
            return ""
        return b"".join(self._spaced[indexes].tolist())[1:].decode()

    def count(self, runs: Sequence[Run]) -> int:
        """Words (tokens) in the runs' text."""
        return sum(r[2] for r in runs)


def block_runs(hash_ids: Sequence[int], block_size: int, start: int, count: int) -> list[Run]:
    """The runs for `count` tokens from absolute position `start` of a prompt laid out in blocks of
    `block_size` tokens named by `hash_ids` (a trace request): token p is position p % block_size of
    block hash_ids[p // block_size]. Positions past the last block continue in the last block."""
    if block_size < 1:
        raise ValueError(f"block size must be at least 1, got {block_size}")
    runs: list[Run] = []
    position, end = start, start + count
    while position < end:
        index = min(position // block_size, len(hash_ids) - 1)
        in_block = position - index * block_size
        # The last block runs on to the end (a prompt longer than its blocks, after rounding).
        take = end - position if index == len(hash_ids) - 1 else min(block_size - in_block, end - position)
        runs.append((int(hash_ids[index]), in_block, take))
        position += take
    return runs

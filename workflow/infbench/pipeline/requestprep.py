"""The prepare step: one scenario's requests for one model, results/requests/{model}/{scenario}.json,
and the tokenizer's side of tokenizer-exact prompts: which words are one token, and how many tokens
the chat template adds. Runs in the tools env (it has transformers; the bench job has not):

    PYTHONPATH=workflow .venvs/transformers/bin/python -m infbench.pipeline.requestprep \
        --scenario-spec results/specs/scenarios/NAME.json --model-spec results/specs/models/MODEL.json \
        --max-tokens 64 --out results/requests/MODEL/NAME.json

A word qualifies when the tokenizer reads it as exactly one token both alone and after a space, and
words joined by single spaces stay one token each. The last property depends on the tokenizer's
pre-tokenizer (byte-level BPE splits before every space; SentencePiece marks every space), so it is
checked, not assumed: a long seeded text of the words must count exactly its words, or the prepare
step stops and says this tokenizer cannot give exact lengths from words.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from infbench.engines.spec import ModelSpec, read_model_spec
from infbench.measure.prepared import PreparedConversations, PreparedSizeError, PrepareInputs
from infbench.measure.scenarios import Scenario
from infbench.measure.trace import TraceError
from infbench.measure.wordtext import WordText
from infbench.pipeline.conversations import load_conversations, sample_conversations
from infbench.pipeline.prompts import PromptSourceError, load_source

WORD = re.compile(r"[a-z]{2,12}")
CHECK_WORDS = 20_000  # words in each seeded text the property is checked on


class PrepareError(ValueError):
    """The tokenizer or the chat template cannot give what a scenario asks; names which and why."""


def _ids(encoded) -> list[int]:
    """Token ids from a tokenizer call or apply_chat_template (a list, or a mapping with input_ids)."""
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


@dataclass
class WordTokenizer:
    """A Hugging Face tokenizer (AutoTokenizer) seen as words of one token each."""

    tokenizer: object
    name: str  # for messages: the model folder

    def count(self, text: str) -> int:
        return len(self._encode([text])[0])

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens; the Rust tokenizer's batch call where the
        tokenizer has one (several times faster on tens of thousands of short words)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
        return [_ids(e) for e in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _decode_each(self, ids: list[int]) -> list[str]:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return backend.decode_batch([[i] for i in ids])
        return self.tokenizer.batch_decode([[i] for i in ids])

    def one_token_words(self) -> list[str]:
        """Lower-case words of 2-12 letters that are one token alone and after a space, sorted."""
        ids = sorted(set(self.tokenizer.get_vocab().values()))
        candidates = sorted({text.strip() for text in self._decode_each(ids) if WORD.fullmatch(text.strip())})
        if not candidates:
            return []
        alone = self._encode(candidates)
        spaced = self._encode([" " + w for w in candidates])
        return [w for w, a, b in zip(candidates, alone, spaced, strict=True) if len(a) == 1 and len(b) == 1]

    def check_words(self, words: Sequence[str], seed: int = 0, content: str = "random") -> None:
        """Seeded texts of the words (drawn as the prompts draw them) count exactly one token per word."""
        if len(words) < 2:
            raise PrepareError(f"tokenizer {self.name}: found {len(words)} one-token words; exact prompts need many")
        text = WordText(tuple(words), seed, content)
        for block in range(3):
            runs = [(block, 0, CHECK_WORDS)]
            n = self.count(text.render(runs))
            if n != CHECK_WORDS:
                raise PrepareError(
                    f"tokenizer {self.name}: {CHECK_WORDS} one-token words joined by spaces counted {n} tokens: "
                    f"joined words do not stay one token each, so prompts of exact token counts cannot be "
                    f"built from words with this tokenizer"
                )

    def template_tokens(self, roles: Sequence[str], words: Sequence[str]) -> tuple[int, int]:
        """(tokens the chat template adds to messages of these roles, of them before the first
        message's words), the same for any number of words, or PrepareError."""
        rng = random.Random(0)
        totals = []
        for size in (1, 7, 50):
            contents = [" ".join(rng.choice(words) for _ in range(size)) for _ in roles]
            messages = [{"role": role, "content": c} for role, c in zip(roles, contents, strict=True)]
            try:
                rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception as err:  # noqa: BLE001 - a template's own refusal (e.g. no system role), in one line
                raise PrepareError(
                    f"model {self.name}: its chat template refuses messages of roles {', '.join(roles)}: {err}"
                ) from None
            total = len(_ids(self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)))
            totals.append(total - size * len(roles))
            start = rendered.find(contents[0])
            prefix = self.count(rendered[:start]) if start >= 0 else 0
        if len(set(totals)) != 1:
            raise PrepareError(
                f"model {self.name}: its chat template adds {', '.join(map(str, totals))} tokens to messages of "
                f"1, 7 and 50 words: not a fixed count, so prompt lengths cannot be made exact"
            )
        return totals[0], prefix

    def text_words(self, texts: Sequence[str], words: Sequence[str]) -> list[str]:
        """The words of real texts, in reading order, kept where they are one-token words (content: text)."""
        known = set(words)
        return [w for text in texts for w in re.findall(r"[a-z]+", text.lower()) if w in known]


def load_tokenizer(model_dir: str) -> WordTokenizer:
    from transformers import AutoTokenizer  # the tools env only

    return WordTokenizer(AutoTokenizer.from_pretrained(model_dir), model_dir)


# --- the prepare step: results/requests/{model}/{scenario}.json ----------------------------------------


def prepare_inputs(scenario, model: ModelSpec, max_tokens: int, tokenizer: WordTokenizer | None) -> PrepareInputs:
    """What the scenario class needs to build its requests: the tokenizer's words and the chat
    template's count for its roles, or its sampled conversations."""
    inputs = PrepareInputs(model=model.name, context_tokens=model.max_model_len, max_tokens=max_tokens)
    if scenario.needs_tokenizer:
        words = tokenizer.one_token_words()
        if scenario.content == "text":  # runs of real text: the bundled prompts' one-token words, in order
            texts = [m["content"] for p in load_source("builtin") for m in p.messages]
            words = tokenizer.text_words(texts, words)
        tokenizer.check_words(words, scenario.seed, scenario.content)
        template, prefix = tokenizer.template_tokens(scenario.roles, words)
        inputs = replace(
            inputs,
            tokenizer=tokenizer.name,
            words=tuple(words),
            template_tokens=template,
            template_prefix_tokens=prefix,
        )
    if scenario.reads_conversations:
        conversations = load_conversations(scenario.source)
        sample = sample_conversations(conversations, scenario.conversations, scenario.seed, scenario.max_turns)
        inputs = replace(inputs, conversations=sample)
    return inputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build one scenario's requests for one model (the prepare step).")
    parser.add_argument("--scenario-spec", type=Path, required=True, help="results/specs/scenarios/NAME.json")
    parser.add_argument("--model-spec", type=Path, required=True, help="results/specs/models/MODEL.json")
    parser.add_argument("--max-tokens", type=int, required=True, help="sampling.max_tokens")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.monotonic()
    scenario = Scenario.from_dict(json.loads(args.scenario_spec.read_text()))
    model = read_model_spec(args.model_spec)
    try:
        tokenizer = load_tokenizer(model.path) if scenario.needs_tokenizer else None
        prepared = scenario.prepare(prepare_inputs(scenario, model, args.max_tokens, tokenizer))
    except (PrepareError, PreparedSizeError, PromptSourceError, TraceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    prepared.write(args.out)
    if isinstance(prepared, PreparedConversations):
        turns = sum(len(c.turns) for c in prepared.conversations)
        print(f"{scenario.name}: {len(prepared.conversations)} conversations, {turns} turns from {scenario.source}")
    else:
        tokens = sum(r.prompt_tokens for r in prepared.requests)
        print(
            f"{scenario.name} on {model.name}: {len(prepared.requests)} requests, {tokens} prompt tokens "
            f"(chat template {prepared.template_tokens} each), {len(prepared.words)} one-token words"
        )
        for note in prepared.notes:
            print(f"  {note}")
    print(f"wrote {args.out} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

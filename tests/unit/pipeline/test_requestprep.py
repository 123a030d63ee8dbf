"""The tokenizer's side of exact prompts: one-token words, the property checked on seeded texts, the
chat template's count, against real Hugging Face tokenizers (a byte-level BPE trained here, and the
SmolLM2 tokenizer of the default model where it is prepared)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers", reason="the prepare step's tokenizer side needs transformers (the tools env)")

from infbench.measure.prepared import shared_prefix_requests, synthetic_requests  # noqa: E402
from infbench.measure.wordtext import WordText  # noqa: E402
from infbench.pipeline.requestprep import PrepareError, WordTokenizer, load_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def bpe(tiny_tokenizer_dir) -> WordTokenizer:
    """A byte-level BPE trained on the bundled prompts (conftest.tiny_tokenizer_dir)."""
    return load_tokenizer(str(tiny_tokenizer_dir))


def test_one_token_words_are_one_token_alone_after_a_space_and_joined(bpe):
    words = bpe.one_token_words()
    assert len(words) > 50 and words == sorted(words)
    for word in words[:40]:
        assert bpe.count(word) == 1 and bpe.count(" " + word) == 1
    bpe.check_words(words, seed=3)
    text = WordText(tuple(words), seed=9)
    for count in (1, 17, 500):
        assert bpe.count(text.render([(4, 0, count)])) == count


def test_the_chat_template_adds_a_fixed_count_and_prompts_come_out_exact(bpe):
    words = bpe.one_token_words()
    template, prefix = bpe.template_tokens(["user"], words)
    # <|user|> \n ... <|end|> \n <|assistant|> \n: the specials and three newlines
    assert (template, prefix) == (6, 2)
    (sized,) = synthetic_requests([(40, 8)], 1, template, "scenarios.s.input_tokens")
    text = WordText(tuple(words), seed=1)
    messages = [{"role": role, "content": text.render(runs)} for role, runs in sized.messages]
    prompt = bpe.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    assert len(prompt["input_ids"]) == sized.prompt_tokens == 40
    two, _ = bpe.template_tokens(["system", "user"], words)
    request = shared_prefix_requests(1, 1, 30, 7, two, seed=0)[0]
    messages = [{"role": role, "content": text.render(runs)} for role, runs in request.messages]
    prompt = bpe.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    assert len(prompt["input_ids"]) == request.prompt_tokens == two + 37


def test_text_words_keep_reading_order(bpe):
    words = bpe.one_token_words()
    reading = bpe.text_words(["What is the capital of France?"], words)
    assert reading == [w for w in ["what", "is", "the", "capital", "of", "france"] if w in set(words)]
    assert len(reading) >= 2


def test_a_tokenizer_that_merges_across_spaces_is_refused():
    """No pre-tokenizer splitting at spaces, and merges that take a space in: joined words do not stay
    one token each."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"a": 0, "b": 1, " ": 2, "aa": 3, "bb": 4, "a ": 5, "a b": 6}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "a"), ("b", "b"), ("a", " "), ("a ", "b")]))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern="\n", behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    with pytest.raises(PrepareError, match="do not stay one token each"):
        WordTokenizer(fast, "merging").check_words(["aa", "bb", "a", "b"])


@pytest.mark.slow
def test_smollm2_prompts_are_exact(prepared_transformers):
    """The default model's tokenizer (byte-level BPE with a default system prompt in its template)."""
    from conftest import PREPARED_MODEL
    from infbench.pipeline.requestprep import load_tokenizer

    tokenizer = load_tokenizer(str(prepared_transformers / "resources" / "models" / PREPARED_MODEL))
    words = tokenizer.one_token_words()
    assert len(words) > 2000
    tokenizer.check_words(words)
    template, prefix = tokenizer.template_tokens(["user"], words)
    assert 0 < prefix < template
    text = WordText(tuple(words), seed=4)
    for request in synthetic_requests([(template + 1, 1), (300, 1), (1500, 1)], 2, template, "s"):
        messages = [{"role": role, "content": text.render(runs)} for role, runs in request.messages]
        ids = tokenizer.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        assert len(ids["input_ids"]) == request.prompt_tokens

"""Prepared requests: what a tokenizer-exact scenario sends, written by the prepare step (which has
the model's tokenizer) and read by the bench job (which has not).

results/requests/{model}/{scenario}.json holds the model's one-token words (wordtext.py), the chat
template's token count, and per request its messages as runs of words, its planned prompt tokens,
and where the kind has them its own max_tokens and planned send time. Rendering a request is
deterministic, so the file is small even for a whole production trace, and the bench job rebuilds
the exact text the prepare step counted.

The generators here are pure (they need only the template's token count): shared prefix groups,
fixed-size synthetic requests, and trace replay from hash ids.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, fields
from pathlib import Path

from infbench.fileio import write_text_atomic
from infbench.measure.client import ChatRequest
from infbench.measure.trace import TraceRequest
from infbench.measure.wordtext import Run, WordText, block_runs

FORMAT_VERSION = 1


class PreparedSizeError(ValueError):
    """A planned size that cannot be built or does not fit the model; names the key or the line."""


@dataclass(frozen=True)
class PreparedRequest:
    id: str
    messages: tuple[tuple[str, tuple[Run, ...]], ...]  # (role, runs of words) per chat message
    prompt_tokens: int  # planned: the words and the chat template's tokens
    max_tokens: int | None = None  # its own output length; None: the config's sampling.max_tokens
    at_s: float | None = None  # planned send, seconds after the start (trace replay); None: the load decides
    label: str | None = None  # what the tables group it by: "1024x128", a prefix group, a trace line

    def words(self) -> int:
        return sum(count for _, runs in self.messages for _, _, count in runs)


@dataclass
class PreparedRequests:
    """One (model, scenario)'s prepared requests and the words they are made of."""

    scenario: str
    kind: str
    model: str
    tokenizer: str  # which tokenizer counted the words (the model's folder)
    template_tokens: int  # tokens the chat template adds around the messages' words
    words: tuple[str, ...]
    content: str  # random | text (wordtext.CONTENT_MODES)
    seed: int
    requests: list[PreparedRequest]
    notes: list[str] = field(default_factory=list)  # what the prepare step adjusted, for the log and tables
    version: int = FORMAT_VERSION

    def word_text(self) -> WordText:
        return WordText(self.words, self.seed, self.content)

    def chat_requests(
        self, prefix: str | None = None, requests: list[PreparedRequest] | None = None
    ) -> list[ChatRequest]:
        """Requests (default: all) rendered to chat messages, ids `{prefix}-{request id}` (default: the scenario)."""
        text = self.word_text()
        prefix = prefix or self.scenario
        return [
            ChatRequest(
                request_id=f"{prefix}-{r.id}",
                prompt_id=r.id,
                messages=[{"role": role, "content": text.render(runs)} for role, runs in r.messages],
                max_tokens=r.max_tokens,
                planned_prompt_tokens=r.prompt_tokens,
            )
            for r in (self.requests if requests is None else requests)
        ]

    def output_lengths(self) -> set[int]:
        """The distinct output lengths its requests ask for (each gets the engine's fixed-length fields)."""
        return {r.max_tokens for r in self.requests if r.max_tokens is not None}

    def to_json(self) -> str:
        # Field by field, not asdict(): a whole trace's requests are 10^5 runs that need no deep copy.
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "requests"}
        data["requests"] = [_request_dict(r) for r in self.requests]
        return json.dumps(data, separators=(",", ":"))

    def write(self, path: str | Path) -> None:
        write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def read(cls, path: str | Path) -> PreparedRequests:
        data = _read_versioned(path)
        requests = [
            PreparedRequest(
                id=r["id"],
                messages=tuple((role, tuple(tuple(run) for run in runs)) for role, runs in r["messages"]),
                prompt_tokens=r["prompt_tokens"],
                max_tokens=r.get("max_tokens"),
                at_s=r.get("at_s"),
                label=r.get("label"),
            )
            for r in data["requests"]
        ]
        return cls(**{**data, "words": tuple(data["words"]), "requests": requests})


def _request_dict(request: PreparedRequest) -> dict:
    data = {"id": request.id, "messages": [[role, [list(run) for run in runs]] for role, runs in request.messages]}
    data["prompt_tokens"] = request.prompt_tokens
    for key in ("max_tokens", "at_s", "label"):
        if getattr(request, key) is not None:
            data[key] = getattr(request, key)
    return data


# --- conversations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    """One conversation's user turns (the engine answers them at run time), and a leading system message."""

    id: str
    turns: tuple[str, ...]
    system: str | None = None
    source_index: int = 0


@dataclass
class PreparedConversations:
    """results/requests/{model}/{scenario}.json of a conversation scenario: its sampled conversations."""

    scenario: str
    source: str
    conversations: list[Conversation]
    version: int = FORMAT_VERSION

    def write(self, path: str | Path) -> None:
        data = {
            "scenario": self.scenario,
            "source": self.source,
            "version": self.version,
            "conversations": [
                {"id": c.id, "turns": list(c.turns), "system": c.system, "source_index": c.source_index}
                for c in self.conversations
            ],
        }
        write_text_atomic(path, json.dumps(data, ensure_ascii=False) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> PreparedConversations:
        data = _read_versioned(path)
        conversations = [
            Conversation(c["id"], tuple(c["turns"]), c.get("system"), c.get("source_index", 0))
            for c in data["conversations"]
        ]
        return cls(data["scenario"], data["source"], conversations, data["version"])

    def chat_turns(self, scenario: str, cache: str | None = None) -> list[list[ChatRequest]]:
        """Each conversation as its turns' requests: turn 1 with the system message, each turn its user
        message (runners.run_conversations puts the history in front at run time)."""
        out = []
        for c in self.conversations:
            system = [{"role": "system", "content": c.system}] if c.system else []
            out.append(
                [
                    ChatRequest(
                        request_id=f"{scenario}-{c.id}-t{turn}",
                        prompt_id=f"{c.id}-t{turn}",
                        messages=(system if turn == 1 else []) + [{"role": "user", "content": text}],
                        conversation=c.id,
                        turn=turn,
                    )
                    for turn, text in enumerate(c.turns, start=1)
                ]
            )
        return out


@dataclass(frozen=True)
class PrepareInputs:
    """What the prepare step hands a scenario class (Scenario.prepare): the model's facts and, per
    kind, its tokenizer's words and chat template count, or its loaded conversations."""

    model: str
    context_tokens: int  # the model's max_model_len
    max_tokens: int  # sampling.max_tokens (output length where a kind has none of its own)
    tokenizer: str = ""
    words: tuple[str, ...] = ()
    template_tokens: int = 0  # for the kind's message roles
    template_prefix_tokens: int = 0  # of them, before the first message's words
    conversations: list[Conversation] = field(default_factory=list)


def _read_versioned(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"prepared requests {path}: cannot read ({err})") from None
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"prepared requests {path}: format version {data.get('version')!r}, this infbench reads "
            f"{FORMAT_VERSION}: run the pipeline again to rebuild it"
        )
    return data


# --- generators ------------------------------------------------------------------------------------


def fits_context(prompt_tokens: int, max_tokens: int, context: int) -> bool:
    return prompt_tokens + max_tokens <= context


def shared_prefix_requests(
    groups: int, prompts_per_group: int, system_tokens: int, question_tokens: int, template_tokens: int, seed: int
) -> list[PreparedRequest]:
    """G groups of P requests: each group's system message is the same `system_tokens` words, each
    request's user message its own `question_tokens` words. Sent in a seeded order, groups mixed, so
    a prefix cache must hold every group's prefix to help."""
    requests = [
        PreparedRequest(
            id=f"g{g:03d}-q{p:04d}",
            messages=(
                ("system", ((g, 0, system_tokens),)),
                ("user", ((groups + g * prompts_per_group + p, 0, question_tokens),)),
            ),
            prompt_tokens=template_tokens + system_tokens + question_tokens,
            label=f"g{g:03d}",
        )
        for g in range(groups)
        for p in range(prompts_per_group)
    ]
    random.Random(seed).shuffle(requests)
    return requests


def synthetic_requests(
    sizes: list[tuple[int, int]], requests_per_size: int, template_tokens: int, key: str
) -> list[PreparedRequest]:
    """`requests_per_size` requests of exactly I prompt tokens (chat template included) and O output
    tokens per (I, O), each with its own words (no shared prefix beyond the template)."""
    requests = []
    for size, (input_tokens, output_tokens) in enumerate(sizes):
        words = input_tokens - template_tokens
        if words < 1:
            raise PreparedSizeError(
                f"{key}: input of {input_tokens} tokens is not longer than the chat template's {template_tokens}"
            )
        for i in range(requests_per_size):
            block = size * requests_per_size + i
            requests.append(
                PreparedRequest(
                    id=f"{input_tokens}x{output_tokens}-{i:04d}",
                    messages=(("user", ((block, 0, words),)),),
                    prompt_tokens=input_tokens,
                    max_tokens=output_tokens,
                    label=f"{input_tokens}x{output_tokens}",
                )
            )
    return requests


def trace_requests(
    planned: list[TraceRequest], block_tokens: int, template_tokens: int, template_prefix_tokens: int
) -> tuple[list[PreparedRequest], int]:
    """Trace rows as requests: the prompt is `input_tokens` long with the template's tokens, the words
    laid out in blocks of `block_tokens` named by the row's hash ids, counted from the start of the
    prompt (the template's leading tokens fill the start of the first block). A row shorter than the
    template gets one word; returns the requests and how many rows that was."""
    requests, raised = [], 0
    for row in planned:
        words = row.input_tokens - template_tokens
        if words < 1:
            words, raised = 1, raised + 1
        requests.append(
            PreparedRequest(
                id=f"line{row.line:06d}",
                messages=(("user", tuple(block_runs(row.hash_ids, block_tokens, template_prefix_tokens, words))),),
                prompt_tokens=template_tokens + words,
                max_tokens=row.output_tokens,
                at_s=row.at_s,
                label=f"line {row.line}",
            )
        )
    return requests, raised

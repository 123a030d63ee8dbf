"""Do the client's counts agree with the server's? Per scenario: completion tokens summed from the
responses' `usage` against the server's generated-token counter, prompt tokens likewise, and requests
completed against the server's success counter.

In a scenario without errors they must match exactly: every request the client counted was served
once, and nothing else reached the server between the two scrapes. A mismatch is a mark in the main
tables and a line in details.md naming both counts. With errors (a request cut off by a timeout
may or may not have been counted by the server) the comparison is shown but not judged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from infbench.measure.records import RequestRecord
from infbench.measure.servermetrics import ServerMetrics


@dataclass(frozen=True)
class ClientCounts:
    """What the client saw of one scenario."""

    requests: int  # sent
    ok: int  # completed without error
    usage_completion_tokens: int | None  # summed over ok requests from usage (None: some had none)
    usage_prompt_tokens: int | None
    chunk_tokens: int | None  # the client's own count: tokens per content chunk, summed
    # Requests it sent but did not record (timed steps' warm-up windows): the server counted them too.
    unrecorded_sends: bool = False

    @classmethod
    def of(cls, records: list[RequestRecord], unrecorded_sends: bool = False) -> ClientCounts:
        ok = [r for r in records if r.ok]
        by_usage = [r for r in ok if r.tokens_counted_by == "usage"]
        complete = len(by_usage) == len(ok)
        return cls(
            requests=len(records),
            ok=len(ok),
            usage_completion_tokens=sum(r.completion_tokens or 0 for r in ok) if complete else None,
            usage_prompt_tokens=sum(r.prompt_tokens or 0 for r in ok)
            if complete and all(r.prompt_tokens is not None for r in ok)
            else None,
            chunk_tokens=sum(sum(r.chunk_tokens) for r in ok) if all(r.chunk_tokens for r in ok) else None,
            unrecorded_sends=unrecorded_sends,
        )


@dataclass(frozen=True)
class Comparison:
    quantity: str  # completion tokens | prompt tokens | requests completed
    client: float | None  # from usage (or the client's count of completed requests)
    server: float | None
    client_label: str = "usage"

    @property
    def match(self) -> bool | None:
        if self.client is None or self.server is None:
            return None
        return round(self.client) == round(self.server)


@dataclass
class Reconciliation:
    """One scenario's comparisons; `mismatch` only when error-free counts differ."""

    scenario: str
    judged: bool  # error-free: counts must match exactly
    comparisons: list[Comparison] = field(default_factory=list)
    note: str | None = None  # why not judged, or nothing to compare

    @property
    def mismatch(self) -> bool:
        return self.judged and any(c.match is False for c in self.comparisons)

    def lines(self) -> list[str]:
        """One line per differing count, naming both."""
        return [
            f"{c.quantity}: client ({c.client_label}) {_count(c.client)}, server {_count(c.server)}"
            for c in self.comparisons
            if c.match is False
        ]

    def to_dict(self) -> dict:
        return {**asdict(self), "mismatch": self.mismatch}


def reconcile(client: ClientCounts, server: ServerMetrics) -> Reconciliation:
    if server.status != "ok":
        return Reconciliation(server.scenario, judged=False, note=server.note or server.status)
    counters = server.counters
    comparisons = [
        Comparison("completion tokens", client.usage_completion_tokens, counters.get("generation_tokens")),
        Comparison("prompt tokens", client.usage_prompt_tokens, counters.get("prompt_tokens")),
        Comparison("requests completed", client.ok, counters.get("requests_ok"), client_label="ok responses"),
    ]
    comparable = [c for c in comparisons if c.match is not None]
    errors = client.requests - client.ok
    note = None
    if errors:
        note = f"{errors} request(s) failed: counts shown, not judged"
    elif client.unrecorded_sends:
        note = "its steps' warm-up requests are sent but not recorded: counts shown, not judged"
    elif not comparable:
        note = "nothing to compare (the engine exports none of these counters)"
    missing = [c.quantity for c in comparisons if c.server is None]
    if missing and comparable:
        note = "; ".join(filter(None, [note, "no server counter for " + ", ".join(missing)]))
    judged = not errors and not client.unrecorded_sends and bool(comparable)
    return Reconciliation(server.scenario, judged=judged, comparisons=comparisons, note=note)


def _count(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"

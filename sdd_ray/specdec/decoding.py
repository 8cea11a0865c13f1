"""What a decode is asked (`Sampling`) and what it counted (`DecodeMetrics`), without torch.

The servers' front-ends and the reports count and sum these over requests; only the engine
(`sdd_ray.specdec.engine`) needs torch, so they live apart from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen: greedy when `temperature == 0`, else sampled after temperature/top-p."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


GREEDY = Sampling()


@dataclass
class DecodeMetrics:
    """Counters of one request, or summed over many (`merge`)."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    target_forwards: int = 0
    drafts: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    proposed_by_position: list[int] = field(default_factory=list)
    accepted_by_position: list[int] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time: steadier than wall time on a shared machine
    requests: int = 1

    def record_draft(self, proposed: int, accepted: int) -> None:
        grow = proposed - len(self.proposed_by_position)
        if grow > 0:
            self.proposed_by_position += [0] * grow
            self.accepted_by_position += [0] * grow
        for position in range(proposed):
            self.proposed_by_position[position] += 1
            self.accepted_by_position[position] += int(position < accepted)
        self.drafts += 1
        self.draft_tokens += proposed
        self.accepted_tokens += accepted

    def merge(self, other: DecodeMetrics) -> DecodeMetrics:
        width = max(len(self.proposed_by_position), len(other.proposed_by_position))

        def add(a: list[int], b: list[int]) -> list[int]:
            return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(width)]

        return DecodeMetrics(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            new_tokens=self.new_tokens + other.new_tokens,
            target_forwards=self.target_forwards + other.target_forwards,
            drafts=self.drafts + other.drafts,
            draft_tokens=self.draft_tokens + other.draft_tokens,
            accepted_tokens=self.accepted_tokens + other.accepted_tokens,
            proposed_by_position=add(self.proposed_by_position, other.proposed_by_position),
            accepted_by_position=add(self.accepted_by_position, other.accepted_by_position),
            seconds=self.seconds + other.seconds,
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            requests=self.requests + other.requests,
        )

    @classmethod
    def from_dict(cls, data: dict) -> DecodeMetrics:
        """Counters back from `as_dict` (the derived rates are recomputed, not read)."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    @property
    def mean_accepted_length(self) -> float:
        """vLLM's mean acceptance length: 1 + accepted / drafts (1.0 when nothing was drafted)."""
        return 1.0 + self.accepted_tokens / self.drafts if self.drafts else 1.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def acceptance_rate_by_position(self) -> list[float]:
        return [a / p if p else 0.0 for a, p in zip(self.accepted_by_position, self.proposed_by_position)]

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.new_tokens / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "target_forwards": self.target_forwards,
            "drafts": self.drafts,
            "draft_tokens": self.draft_tokens,
            "accepted_tokens": self.accepted_tokens,
            "mean_accepted_length": self.mean_accepted_length,
            "acceptance_rate": self.acceptance_rate,
            "acceptance_rate_by_position": self.acceptance_rate_by_position,
            "seconds": self.seconds,
            "tokens_per_s": self.tokens_per_s,
            "cpu_seconds": self.cpu_seconds,
            "tokens_per_cpu_s": self.tokens_per_cpu_s,
        }

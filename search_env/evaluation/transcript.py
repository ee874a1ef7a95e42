"""`Transcript`: one episode's conversation as the policy sees it (the prompt, then its own turns
alternating with the env's observations), rendered Search-R1 style or as chat messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["policy", "env"]


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    text: str


@dataclass
class Transcript:
    """The env only sends the new text each step, so the agent keeps the history here."""

    prompt: str
    turns: list[Turn] = field(default_factory=list)

    def add_action(self, text: str) -> None:
        self.turns.append(Turn("policy", text))

    def add_observation(self, text: str) -> None:
        self.turns.append(Turn("env", text))

    @property
    def actions(self) -> list[str]:
        return [t.text for t in self.turns if t.role == "policy"]

    @property
    def observations(self) -> list[str]:
        return [t.text for t in self.turns if t.role == "env"]

    @property
    def last_observation(self) -> str | None:
        return self.observations[-1] if self.observations else None

    def continuation(self) -> str:
        """Everything after the prompt as one string: Search-R1 appends the observations to the
        model's own response, so this is the assistant text a completion continues."""
        return "".join(t.text for t in self.turns)

    def as_text(self) -> str:
        """Prompt and continuation as one completion prompt (no chat template)."""
        return self.prompt + self.continuation()

    def as_messages(self) -> list[dict[str, str]]:
        """Chat form: the prompt and each observation are user messages, the policy's turns assistant ones."""
        messages = [{"role": "user", "content": self.prompt}]
        for turn in self.turns:
            role = "assistant" if turn.role == "policy" else "user"
            messages.append({"role": role, "content": turn.text.strip() or turn.text})
        return messages

    def to_json(self) -> list[dict[str, str]]:
        return [{"role": "prompt", "text": self.prompt}] + [{"role": t.role, "text": t.text} for t in self.turns]

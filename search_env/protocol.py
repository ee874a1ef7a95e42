"""The Search-R1 interaction protocol: prompt, action parsing, and the env's observation texts.

Texts are Search-R1's own (search_r1/llm_agent/generation.py and scripts/data_process/*), so a policy
trained there reads the same strings here.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

SEARCH_R1_TEMPLATE = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you "
    "get new information. After reasoning, if you find you lack some knowledge, you can call a search engine "
    "by <search> query </search> and it will return the top searched results between <information> and "
    "</information>. You can search as many times as your want. If you find no further external knowledge "
    "needed, you can directly provide the answer inside <answer> and </answer>, without detailed "
    "illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
)

# The same task for a policy that searches through its chat template's tool calls (TRL's `tools=` /
# `environment_factory`, verl's tool agent loop) instead of <search> tags: the tool is named `search`.
TOOL_CALLING_TEMPLATE = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you "
    "get new information. If you find you lack some knowledge, you can call the search tool, which returns the "
    "top searched results. You can search as many times as your want. If you find no further external "
    "knowledge needed, you can directly provide the answer inside <answer> and </answer>, without detailed "
    "illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
)

INVALID_ACTION_MESSAGE = (
    "\nMy previous action is invalid. "
    "If I want to search, I should put the query between <search> and </search>. "
    "If I want to give the final answer, I should put the answer between <answer> and </answer>. "
    "Let me try again.\n"
)

# Search-R1's action pattern: the first complete <search>...</search> or <answer>...</answer>.
_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_STOP = re.compile(r"</(?:search|answer)>")

ActionKind = Literal["search", "answer", "invalid"]


@dataclass(frozen=True, slots=True)
class ParsedAction:
    kind: ActionKind
    content: str  # the query or the answer, stripped; "" for an invalid action


def parse_action(text: str) -> ParsedAction:
    """The first complete `<search>` or `<answer>` block; text after its closing tag is ignored."""
    match = _ACTION.search(text)
    if match is None:
        return ParsedAction("invalid", "")
    return ParsedAction(match.group(1), match.group(2).strip())  # type: ignore[arg-type]


def truncate_at_action(text: str) -> str:
    """The text up to and including the first `</search>` or `</answer>` (what a turn really said)."""
    match = _STOP.search(text)
    return text if match is None else text[: match.end()]


def format_question(question: str, template: str = SEARCH_R1_TEMPLATE) -> str:
    """Search-R1's make_prefix: the question stripped, with a '?' appended when it has none."""
    return template.format(question=_prompt_question(question))


def _prompt_question(question: str) -> str:
    question = question.strip()
    if question and question[-1] != "?":
        question += "?"
    return question


@dataclass(frozen=True, slots=True)
class PromptShape:
    """What a template's rendered size depends on: its literal characters and its `{question}` fields."""

    literal_chars: int
    fields: int

    def rendered_chars(self, question: str) -> int:
        """len(format_question(question, template)), computed without building the prompt.

        A template of many fields and a long question can multiply into gigabytes: this is how the
        size is checked before any of it is allocated.
        """
        stripped = question.strip()
        chars = len(stripped) + (1 if stripped and stripped[-1] != "?" else 0)
        return self.literal_chars + self.fields * chars


def prompt_shape(template: str) -> PromptShape:
    """The shape of a template whose only replacement fields are plain `{question}`.

    Raises ValueError for an invalid format string, a template with no field, or any other field
    (a format spec like `{question:>999999999}` pads beyond any size check, an attribute or index
    like `{question.__class__}` would expose internals, another name has no value).
    """
    literal, fields = 0, 0
    try:
        for text, field, spec, conversion in string.Formatter().parse(template):
            literal += len(text)  # parse() has already turned "{{" and "}}" into one brace
            if field is None:
                continue
            if field != "question" or spec or conversion:
                shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                raise ValueError(f"prompt_template may hold only plain '{{question}}' fields, got {shown[:80]!r}")
            fields += 1
    except ValueError as err:
        if "prompt_template" in str(err):
            raise
        raise ValueError(f"prompt_template is not a valid format string: {err}") from None
    if not fields:
        raise ValueError("prompt_template must contain '{question}'")
    return PromptShape(literal, fields)


def format_passages(contents: Sequence[str]) -> str:
    """Search-R1's _passages2string: `Doc i(Title: "t") text` per passage, one a line."""
    lines = []
    for i, c in enumerate(contents):
        title, _, text = c.partition("\n")  # Search-R1 keeps the title's quotes
        lines.append(f"Doc {i + 1}(Title: {title}) {text}\n")
    return "".join(lines)


def information_block(contents: Sequence[str], max_chars: int | None = None) -> str:
    """The observation after a search: `\\n\\n<information>...</information>\\n\\n`, as Search-R1 appends it.

    With `max_chars`, the passages are cut so the whole block fits (the closing tag always survives).
    """
    body = format_passages(contents).strip()
    head, tail = "\n\n<information>", "</information>\n\n"
    if max_chars is not None and len(head) + len(body) + len(tail) > max_chars:
        body = body[: max(0, max_chars - len(head) - len(tail))]
    return f"{head}{body}{tail}"


def search_error_block(message: str, max_chars: int | None = None) -> str:
    """The observation after a search that brought no documents because it failed: what went wrong,
    in the `<information>` block a policy reads search results from (cut to `max_chars` like it)."""
    head, tail = "\n\n<information>", "</information>\n\n"
    body = f"Search failed: {message}"
    if max_chars is not None and len(head) + len(body) + len(tail) > max_chars:
        body = body[: max(0, max_chars - len(head) - len(tail))]
    return f"{head}{body}{tail}"

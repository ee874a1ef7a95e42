"""The tiny policy's prompt template (the env's `prompt_template` option).

Search-R1's instruction text is ~100 tokens the tiny model cannot read; it learns the protocol from
the warm-start data instead, so the prompt only needs to carry the question.
"""

TINY_PROMPT_TEMPLATE = "Question: {question}\n"

"""Answer normalisation, exact match and token F1, behaving exactly like Search-R1 and FlashRAG.

Search-R1 (verl/utils/reward_score/qa_em.py) scores with `em_check` / `subem_check`; FlashRAG's
token-level F1 adds the yes/no/noanswer rule. Rewards must match theirs to the bit so that numbers
reported on this suite compare with the papers'.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCTUATION = frozenset(string.punctuation)  # ASCII only: unicode dashes and quotes survive, as upstream
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# FlashRAG: a yes/no/noanswer prediction only scores against the identical gold.
_SPECIAL_ANSWERS = ("yes", "no", "noanswer")


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, replace whole-word articles by spaces, fold white space."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _as_list(golden_answers: str | Sequence[str]) -> list[str]:
    return [golden_answers] if isinstance(golden_answers, str) else list(golden_answers)


def em_check(prediction: str, golden_answers: str | Sequence[str]) -> int:
    """1 if the normalised prediction equals any normalised gold answer, else 0."""
    normalized_prediction = normalize_answer(prediction)
    return int(any(normalize_answer(gold) == normalized_prediction for gold in _as_list(golden_answers)))


def subem_check(prediction: str, golden_answers: str | Sequence[str]) -> int:
    """1 if any normalised gold answer is a substring of the normalised prediction, else 0."""
    normalized_prediction = normalize_answer(prediction)
    return int(any(normalize_answer(gold) in normalized_prediction for gold in _as_list(golden_answers)))


def f1_score(prediction: str, ground_truth: str) -> float:
    """SQuAD token F1 between the normalised prediction and one normalised gold answer."""
    pred = normalize_answer(prediction)
    gold = normalize_answer(ground_truth)
    if (pred in _SPECIAL_ANSWERS or gold in _SPECIAL_ANSWERS) and pred != gold:
        return 0.0
    pred_tokens = pred.split()
    gold_tokens = gold.split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def max_f1(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """The best `f1_score` of the prediction over the gold answers (0.0 for no golds)."""
    return max((f1_score(prediction, gold) for gold in _as_list(golden_answers)), default=0.0)

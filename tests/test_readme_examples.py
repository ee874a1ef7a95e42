"""The README's examples name what exists: every question and entity its snippets use is in the default
world, the env snippet's reset(seed=0) draws the question its comment shows with the gold answer it
answers, and no placeholder text of an unbuilt part is left ("nothing here yet", "(later)")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from search_env.corpus import iter_corpus, split_contents
from search_env.qa_data import load_qa
from search_env.world.store import ensure_world

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SMOKE = (REPO / "docker" / "smoke.sh").read_text()


@pytest.fixture(scope="module")
def default_world():
    world = ensure_world("default")
    titles = {split_contents(p.contents)[0] for p in iter_corpus(world.corpus)}
    questions = {r.question: r for split in ("train", "test") for r in load_qa(world.qa[split])}
    return world, titles, questions


def test_the_example_questions_are_the_default_worlds(default_world):
    _, titles, questions = default_world
    for question in (
        "Who was Zaekae Caequigraend married to?",
        "What is the birthplace of the writer of the novel The Copper Atlas of Hite?",
        "Who founded Gybrati Sound?",
    ):
        assert question in " ".join(README.split()) or question in SMOKE, question
        assert question in questions, f"{question!r} is not a question of the default world"
    # The curl, client and smoke snippets search an organisation that has its own passage.
    assert "Gybrati Sound" in titles and "Who founded Gybrati Sound?" in README and "Gybrati Sound" in SMOKE
    assert "who founded Gybrati Sound" in README


def test_the_env_snippet_draws_the_question_it_shows(default_world):
    import gymnasium

    import search_env  # noqa: F401  (registers the ids)

    _, titles, _ = default_world
    env = gymnasium.make(
        "searchgym/SearchQA-v0", data="world:default", split="test", retriever_url="http://127.0.0.1:9", max_turns=4
    )
    _, info = env.reset(seed=0)  # no search yet: no retriever needed
    assert info["question"] == "When was Fugai Naiquumeir born?"
    assert f'"{info["question"]}"' in README and "Fugai Naiquumeir" in titles
    _, reward, terminated, _, info = env.step("<answer> 1930 </answer>")
    assert terminated and reward == 1.0
    assert '"<answer> 1930 </answer>"' in README and "<answer> 1930 </answer>" in SMOKE
    env.close()


def test_no_placeholder_text_is_left():
    texts = {"README.md": README}
    for package in ("search_env", "agent_server", "trainer"):
        for path in (REPO / package).rglob("*.py"):
            texts[str(path.relative_to(REPO))] = path.read_text()
    for name, text in texts.items():
        for stale in ("nothing here yet", "(later)", "(once it exists)"):
            assert stale not in text, f"{name} still says {stale!r}"
    assert not re.search(r"Quorvane|Saicivik|Cyquur", README)  # the old examples, not in any world

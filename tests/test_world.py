"""The embedded world: determinism, sizes, unique names, questions grounded in their passages, caching."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path

import pytest

from search_env.answers import normalize_answer
from search_env.cli import main
from search_env.corpus import iter_corpus, split_contents
from search_env.qa_data import load_qa
from search_env.world import (
    DATA_SOURCE,
    SPLITS,
    VERSION,
    WORLD_PRESETS,
    World,
    ensure_world,
    generate_world,
    resolve_config,
    write_world,
)


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world("default")  # ~2 s: every structural check runs on the full default preset


@pytest.fixture(scope="module")
def contents(world: World) -> dict[str, str]:
    return {p.id: p.contents for p in world.passages}


def _all_questions(world: World):
    return [q for split in SPLITS for q in world.questions[split]]


# -- sizes and determinism --------------------------------------------------------------------


def test_default_preset_sizes(world: World) -> None:
    counts = world.counts()
    assert counts["passages"] >= 20_000
    assert counts["train"] >= 5_000
    assert counts["dev"] == 500
    assert counts["test"] == 500


@pytest.mark.parametrize(("preset", "low", "high"), [("tiny", 250, 400), ("small", 1_700, 2_500)])
def test_small_presets_sizes(preset: str, low: int, high: int) -> None:
    small = generate_world(preset)
    assert low <= len(small.passages) <= high
    config = WORLD_PRESETS[preset]
    assert {s: len(small.questions[s]) for s in SPLITS} == config.split_sizes()


def test_hop_mix_in_every_split(world: World) -> None:
    for split in SPLITS:
        hops = Counter(q.metadata["hops"] for q in world.questions[split])
        total = len(world.questions[split])
        assert set(hops) == {1, 2, 3}
        assert hops[1] == pytest.approx(0.5 * total, abs=1)
        assert hops[2] == pytest.approx(0.35 * total, abs=1)
        assert hops[3] == pytest.approx(0.15 * total, abs=1)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    first = write_world("tiny", tmp_path / "a")
    second = write_world("tiny", tmp_path / "b")
    other = write_world("tiny", tmp_path / "c", seed=1)
    names = ["corpus.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl", "world.json"]
    for name in names:
        assert (first.root / name).read_bytes() == (second.root / name).read_bytes(), name
    assert (first.root / "corpus.jsonl").read_bytes() != (other.root / "corpus.jsonl").read_bytes()
    assert (first.root / "train.jsonl").read_bytes() != (other.root / "train.jsonl").read_bytes()
    assert first.fingerprint == second.fingerprint != other.fingerprint


def test_fingerprint_covers_config_and_version() -> None:
    tiny = resolve_config("tiny")
    assert tiny.fingerprint() == resolve_config("tiny").fingerprint()
    assert tiny.fingerprint() != resolve_config("tiny", seed=5).fingerprint()
    assert tiny.fingerprint() != resolve_config("small").fingerprint()
    assert len(tiny.fingerprint()) == 12
    with pytest.raises(ValueError, match="unknown world preset"):
        resolve_config("huge")


# -- names and corpus format ------------------------------------------------------------------


def test_entity_names_unique_after_normalisation(world: World) -> None:
    names = [e.name for e in world.entities]
    names += [e.attrs["landmark"] for e in world.entities if "landmark" in e.attrs]
    names += [e.attrs["base"] for e in world.entities if e.kind == "river"]  # the river answers' alias
    keys = Counter(normalize_answer(name) for name in names)
    assert all(keys.values()) and "" not in keys
    assert [k for k, n in keys.items() if n > 1] == []


def test_passage_ids_and_format(world: World) -> None:
    assert [p.id for p in world.passages] == [str(i) for i in range(len(world.passages))]
    for passage in world.passages:
        title, text = split_contents(passage.contents)
        assert passage.contents == f'"{title}"\n{text}'
        assert title and text.strip() and "\n" not in text


def test_written_corpus_lines(tmp_path: Path) -> None:
    paths = write_world("tiny", tmp_path)
    lines = paths.corpus.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        record = json.loads(line)
        assert list(record) == ["id", "contents"]
        assert record["id"] == str(number)
        assert record["contents"].startswith('"') and '"\n' in record["contents"]
    assert [p.id for p in iter_corpus(paths.corpus)] == [str(i) for i in range(len(lines))]
    info = paths.info()
    assert info["version"] == VERSION and info["counts"]["passages"] == len(lines)
    for split in SPLITS:
        records = load_qa(paths.qa[split])
        assert len(records) == info["counts"][split] == WORLD_PRESETS["tiny"].split_sizes()[split]
        assert {r.data_source for r in records} == {DATA_SOURCE}


def test_distractor_pages_exist(world: World) -> None:
    titles = Counter(split_contents(p.contents)[0] for p in world.passages)
    assert any(t.startswith("List of ") for t in titles)
    assert any("is a surname." in p.contents for p in world.passages)  # disambiguation pages
    assert any("not to be confused with" in p.contents for p in world.passages)  # look-alike names
    assert sum(e.distractor for e in world.entities) > 100
    assert max(titles.values()) >= 3  # entities with several passages under one title


# -- questions ----------------------------------------------------------------------------------


def test_no_question_shared_between_splits(world: World) -> None:
    texts = [q.question for q in _all_questions(world)]
    assert len(texts) == len(set(texts))
    ids = [q.id for q in _all_questions(world)]
    assert len(ids) == len(set(ids))
    assert all(q.id.startswith(f"{split}_") for split in SPLITS for q in world.questions[split])


def test_question_records_shape(world: World) -> None:
    for q in _all_questions(world):
        meta = q.metadata
        assert q.data_source == DATA_SOURCE
        assert q.golden_answers and all(a.strip() for a in q.golden_answers)
        assert q.question.endswith("?") and q.question[0].isupper()
        assert len(meta["supporting_passages"]) == meta["hops"] == len(meta["entities"])
        assert meta["type"].count(">") == meta["hops"] - 1
        assert meta["entities"][0] in q.question  # the chain starts from a named subject


def test_single_hop_supporting_passage_holds_subject_and_answer(world: World, contents: dict[str, str]) -> None:
    single = [q for q in _all_questions(world) if q.metadata["hops"] == 1]
    assert len(single) >= 3_000
    for q in single:
        (passage_id,) = q.metadata["supporting_passages"]
        text = contents[passage_id]
        subject = q.metadata["entities"][0]
        assert subject in text, (q.question, text)
        assert q.golden_answers[0] in text, (q.question, q.golden_answers, text)
        assert split_contents(text)[0] == subject  # the fact sits on the subject's own page


def test_multi_hop_chains_are_consistent(world: World, contents: dict[str, str]) -> None:
    multi = [q for q in _all_questions(world) if q.metadata["hops"] > 1]
    assert {q.metadata["hops"] for q in multi} == {2, 3}
    for q in multi:
        entities = q.metadata["entities"]
        passages = [contents[pid] for pid in q.metadata["supporting_passages"]]
        # hop i's passage is about entity i and names what hop i finds: entity i+1, or the answer.
        for i, text in enumerate(passages):
            assert split_contents(text)[0] == entities[i]
            found = entities[i + 1] if i + 1 < len(entities) else q.golden_answers[0]
            assert found in text, (q.question, i, found, text)
        # Bridge entities are never named in the question: they must be found by searching.
        assert not any(name in q.question for name in entities[1:]), q.question


def test_answers_are_not_in_the_question(world: World) -> None:
    for q in _all_questions(world):
        assert normalize_answer(q.golden_answers[0]) not in normalize_answer(q.question).split(), q


# -- cache --------------------------------------------------------------------------------------


def test_ensure_world_uses_home_and_reuses_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCHGYM_HOME", str(tmp_path / "home"))
    paths = ensure_world("tiny")
    assert paths.root.parent == tmp_path / "home" / "worlds"
    assert paths.root.name == f"tiny-{paths.fingerprint}"
    assert paths.corpus.is_file() and all(p.is_file() for p in paths.qa.values())
    stamps = {p.name: p.stat().st_mtime_ns for p in paths.root.iterdir()}
    again = ensure_world("tiny")
    assert again == paths
    assert {p.name: p.stat().st_mtime_ns for p in again.root.iterdir()} == stamps
    # Another seed is another world beside it; no staging folder is left behind.
    other = ensure_world("tiny", seed=9)
    assert other.root != paths.root
    assert sorted(p.name for p in (tmp_path / "home" / "worlds").iterdir()) == sorted(
        [paths.root.name, other.root.name])


def test_ensure_world_concurrent_callers_see_one_complete_world(tmp_path: Path) -> None:
    results, errors = [], []

    def build() -> None:
        try:
            results.append(ensure_world("tiny", root=tmp_path))
        except Exception as err:  # surfaced by the assert below
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({r.root for r in results}) == 1
    assert [p.name for p in tmp_path.iterdir()] == [results[0].root.name]
    assert results[0].info()["counts"]["passages"] == len(results[0].corpus.read_text().splitlines())


def test_ensure_world_replaces_a_partial_folder(tmp_path: Path) -> None:
    fingerprint = resolve_config("tiny").fingerprint()
    partial = tmp_path / f"tiny-{fingerprint}"
    partial.mkdir()
    (partial / "corpus.jsonl").write_text("half", encoding="utf-8")  # no world.json: never finished
    paths = ensure_world("tiny", root=tmp_path)
    assert paths.info()["fingerprint"] == fingerprint
    assert paths.corpus.read_text(encoding="utf-8") != "half"


# -- command line -------------------------------------------------------------------------------


def test_cli_world_writes_to_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["world", "--preset", "tiny", "--seed", "2", "--out", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert "world tiny" in out and "seed 2" in out
    assert f"{tmp_path / 'w' / 'corpus.jsonl'}" in out
    assert "200 questions" in out and "passages" in out
    assert json.loads((tmp_path / "w" / "world.json").read_text())["config"]["seed"] == 2


def test_cli_world_defaults_to_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEARCHGYM_HOME", str(tmp_path))
    assert main(["world", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "worlds") in out
    assert os.listdir(tmp_path / "worlds") == [f"tiny-{resolve_config('tiny').fingerprint()}"]


def test_cli_rejects_unknown_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["world", "--preset", "huge"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "search-env world: unknown world preset 'huge'; known: default, large, small, tiny"

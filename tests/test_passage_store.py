"""PassageStore: row and id lookups over a memory-mapped corpus, gzip, and change detection."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from agent_server.passage_store import CorpusChangedError, PassageStore
from search_env.corpus import iter_corpus
from tests.backend_fixtures import make_entries, write_corpus


def test_numeric_ids_use_the_row_fast_path_and_match_iter_corpus(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl", make_entries(120))
    store = PassageStore.build(corpus, tmp_path / "store", progress=False)
    assert store.meta["ids"] == {"kind": "rows", "base": 1}
    assert not (tmp_path / "store" / "id_hashes.npy").exists()
    assert len(store) == 120
    assert store.get_rows(range(120)) == list(iter_corpus(corpus))
    assert [p.id for p in store.get_rows([119, 0, 5])] == ["120", "1", "6"]
    assert store.ids().tolist() == [p.id for p in iter_corpus(corpus)]  # generated, not read
    assert [p.id for p in store.get_ids(["7", "120", "1"])] == ["7", "120", "1"]
    assert store.rows_of_ids(["0", "121", "07", "x", "3"]).tolist() == [-1, -1, -1, -1, 2]
    with pytest.raises(KeyError, match="121"):
        store.get_ids(["121"])
    with pytest.raises(IndexError):
        store.get_rows([120])
    assert store.get_rows([]) == []


def test_string_ids_and_gzip_corpus(tmp_path: Path) -> None:
    entries = make_entries(80, id_of=lambda row: f"wiki:{row * 7 % 80:03d}-x")
    corpus = write_corpus(tmp_path / "c.jsonl.gz", entries)
    store = PassageStore.build(corpus, tmp_path / "store", progress=False)
    assert store.meta["ids"]["kind"] == "hashed" and store.meta["data_file"] == "corpus.jsonl"
    assert store.ids().tolist() == [e.id for e in entries]
    assert store.data_path == tmp_path / "store" / "corpus.jsonl"  # decompressed once, then mapped
    assert store.get_rows(range(80)) == list(iter_corpus(corpus))
    wanted = [entries[i].id for i in (79, 3, 40, 3)]
    assert [p.id for p in store.get_ids(wanted)] == wanted
    assert store.get_ids([entries[10].id])[0].contents == entries[10].contents
    assert store.rows_of_ids(["wiki:999-x"]).tolist() == [-1]


def test_ids_that_stop_following_row_numbers_are_hashed_from_the_start(tmp_path: Path) -> None:
    ids = ["0", "1", "2", "9", "4", "abc"]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "contents": f'"T{i}"\ntext {i}'}) + "\n" for i in ids))
    store = PassageStore.build(corpus, tmp_path / "store", progress=False)
    assert store.meta["ids"]["kind"] == "hashed"
    assert store.rows_of_ids(ids).tolist() == list(range(6))
    assert store.rows_of_ids(["3", "5"]).tolist() == [-1, -1]


def test_blank_lines_missing_ids_and_duplicates(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        "\n" + json.dumps({"id": "a", "contents": "first"}) + "\n\n"
        + json.dumps({"contents": "no id", "id_note": 1}) + "\n"
        + json.dumps({"id": "a", "contents": "duplicate"}) + "\n"
        + json.dumps({"id": 42, "contents": "numeric json id"}) + "\n"
    )
    store = PassageStore.build(corpus, tmp_path / "store", progress=False)
    assert [p.contents for p in store.get_rows(range(4))] == ["first", "no id", "duplicate", "numeric json id"]
    assert store.get_rows([1])[0].id == "1"  # a missing id falls back to the row
    assert store.get_ids(["a"])[0].contents == "first"  # a duplicated id finds its first row
    assert store.get_ids(["42"])[0].contents == "numeric json id"


def test_open_is_fast_and_detects_a_changed_corpus(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl", make_entries(50))
    PassageStore.build(corpus, tmp_path / "store", progress=False).close()
    started = time.perf_counter()
    store = PassageStore.open(tmp_path / "store")
    assert time.perf_counter() - started < 0.5
    assert store.get_ids(["50"])[0].id == "50"
    store.close()

    os.utime(corpus, ns=(0, 10**18))  # touched, same bytes: still valid
    PassageStore.open(tmp_path / "store").close()

    moved = tmp_path / "elsewhere.jsonl"
    shutil.copyfile(corpus, moved)
    corpus.unlink()
    with pytest.raises(FileNotFoundError, match="not found"):
        PassageStore.open(tmp_path / "store")
    with PassageStore.open(tmp_path / "store", corpus=moved) as store:  # a moved corpus, given explicitly
        assert store.corpus_path == moved and store.get_rows([0])[0].id == "1"

    with moved.open("a") as handle:
        handle.write(json.dumps({"id": "51", "contents": "late addition"}) + "\n")
    with pytest.raises(CorpusChangedError, match="changed"):
        PassageStore.open(tmp_path / "store", corpus=moved)
    rebuilt = PassageStore.open_or_build(moved, tmp_path / "store")
    assert len(rebuilt) == 51 and rebuilt.get_ids(["51"])[0].contents == "late addition"


def test_offsets_are_uint64_and_memory_mapped(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl", make_entries(10))
    store = PassageStore.build(corpus, tmp_path / "store", progress=False)
    offsets = np.load(tmp_path / "store" / "offsets.npy", mmap_mode="r")
    assert offsets.dtype == np.uint64 and len(offsets) == 11 and int(offsets[-1]) == corpus.stat().st_size
    assert isinstance(store._offsets, np.memmap)


def test_refuses_to_overwrite_a_foreign_folder_and_an_empty_corpus(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl", make_entries(3))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        PassageStore.build(corpus, tmp_path / "mine", progress=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no passages"):
        PassageStore.build(empty, tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()

"""wiki-18 corpus reading: plain and gzip JSONL, bad lines, id fallback, contents splitting."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from search_env.corpus import Passage, format_contents, iter_corpus, split_contents

ROWS = [
    {"id": "0", "contents": format_contents("Korvath", "Korvath is a city on the Vessel River.")},
    {"id": "1", "contents": format_contents("Varen Tolkas", "Varen Tolkas (born 1874) was a novelist.")},
]


def test_plain_and_gzip_read_the_same(tmp_path: Path) -> None:
    plain = tmp_path / "corpus.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    packed = tmp_path / "corpus.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in ROWS)
    expected = [Passage(id=r["id"], contents=r["contents"]) for r in ROWS]
    assert list(iter_corpus(plain)) == expected
    assert list(iter_corpus(packed)) == expected


def test_blank_lines_skipped_and_missing_id_falls_back_to_line_number(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    lines = [json.dumps(ROWS[0]), "", json.dumps({"contents": '"T"\nbody'})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    passages = list(iter_corpus(path))
    assert [p.id for p in passages] == ["0", "2"]  # 0-based line number of the id-less record
    assert passages[1].title == "T" and passages[1].text == "body"


def test_integer_ids_become_strings(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": 17, "contents": '"T"\nx'}) + "\n", encoding="utf-8")
    assert next(iter_corpus(path)).id == "17"


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"id": "1"}', "no `contents` field"),
        ("{not json", "not JSON"),
        ("[1, 2]", r"not an object with `id` and `contents` \(an array\)"),
    ],
)
def test_bad_line_error_names_the_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: {reason}"):
        list(iter_corpus(path))


def test_split_and_format_contents_round_trip() -> None:
    contents = format_contents("The Ashen Lattice", "A novel.\nSecond line.")
    assert contents == '"The Ashen Lattice"\nA novel.\nSecond line.'
    assert split_contents(contents) == ("The Ashen Lattice", "A novel.\nSecond line.")
    assert split_contents("no title line") == ("no title line", "")
    assert split_contents('"Only a title"') == ("Only a title", "")


def test_passage_properties_and_json() -> None:
    passage = Passage(id="5", contents=format_contents("Caf\u00e9 Noir", "text"))
    assert passage.title == "Caf\u00e9 Noir"
    assert passage.text == "text"
    assert json.loads(passage.to_json()) == {"id": "5", "contents": '"Caf\u00e9 Noir"\ntext'}
    assert "Caf\u00e9" in passage.to_json()  # not escaped: wiki-18 files are UTF-8

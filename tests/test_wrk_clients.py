"""benchmarks/wrk_clients.py (the concurrent-clients load of benchmarks/retrieval.py): how the bodies are
dealt to wrk's threads, checked without wrk; and, where wrk is installed (not in CI), a short run against
a real BM25 server on loopback."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from benchmarks import wrk_clients
from search_env.qa_data import load_qa


def _bodies(queries: list[str]) -> list[str]:
    return [json.dumps({"queries": [q], "topk": 3, "return_scores": True}) for q in queries]


def test_each_thread_gets_its_own_share_of_the_bodies_in_order_one_valid_json_body_a_line(tmp_path):
    queries = [f'query {i} with "quotes", a tab\t and ünïcode' for i in range(11)]
    script = wrk_clients.write_inputs(_bodies(queries), 3, tmp_path)
    assert script.read_text() == wrk_clients.WRK_SCRIPT
    shares = [
        [json.loads(line)["queries"] for line in (tmp_path / f"bodies-{t}.txt").read_text().splitlines()]
        for t in range(3)
    ]
    assert shares == [[[q] for q in queries[t::3]] for t in range(3)]  # disjoint, together every query once


def test_too_few_bodies_or_a_line_break_in_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="3 wrk threads"):
        wrk_clients.deal(_bodies(["a", "b"]), 3)
    with pytest.raises(ValueError, match="line break"):
        wrk_clients.deal(["{\n}", "{}"], 2)
    with pytest.raises(ValueError, match="multiple of 2 wrk threads"):
        wrk_clients.run("http://127.0.0.1:9", "/retrieve", _bodies(["a", "b"]), connections=3, threads=2, seconds=1)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_wrk_posts_every_connection_a_different_query_and_fails_loudly_on_error_responses(bm25_server, small_world):
    questions = list(dict.fromkeys(r.question for r in load_qa(small_world.qa["train"])))
    before = httpx.get(bm25_server.url + "/info").json()["deduplication"]["duplicates"]
    result = wrk_clients.run(bm25_server.url, "/retrieve", _bodies(questions), connections=8, threads=2, seconds=1)
    after = httpx.get(bm25_server.url + "/info").json()["deduplication"]["duplicates"]
    assert result.requests > 0 and result.p50_ms <= result.p99_ms and result.cpu_s > 0
    assert after == before  # no two connections ever sent the same query in one coalesced round
    with pytest.raises(RuntimeError, match="status > 399"):
        wrk_clients.run(bm25_server.url, "/no-such-path", _bodies(questions), connections=2, threads=2, seconds=1)

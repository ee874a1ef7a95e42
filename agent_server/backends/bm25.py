"""BM25 over a pyserini (Anserini/Lucene) index: building one from a corpus, and searching one.

Any Lucene index pyserini can open loads by path, Search-R1's prebuilt wiki-18 BM25 index included.
Passages come from the index's stored raw JSON (`{"id","contents"}` or `{"id","title","text"}`); an
index built without stored raw docs needs the corpus, read through a PassageStore by docid.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent_server.backends.base import Hit
from agent_server.index_builds import check_build_paths, publish_build
from agent_server.java_runtime import configure_java
from agent_server.lucene_indexer import run_indexer
from agent_server.passage_store import PassageStore, cached_store
from search_env import __version__
from search_env.corpus import format_contents
from search_env.corpus_validation import write_clean_corpus

logger = logging.getLogger(__name__)

META = "searchgym-bm25.json"  # Lucene ignores files it does not know, so ours can sit in the index dir


def _collection_name(corpus: Path) -> str:
    """A file name JsonCollection accepts (it picks files by suffix), keeping `.gz` if compressed."""
    gz = corpus.suffix == ".gz"
    inner = corpus.with_suffix("") if gz else corpus
    stem_suffix = inner.suffix if inner.suffix in (".json", ".jsonl") else ".jsonl"
    return "corpus" + stem_suffix + (".gz" if gz else "")


def _link_corpus(corpus: Path, input_dir: Path) -> Path:
    """Expose the corpus to the indexer without copying it: a symlink, else a hard link, else a copy.

    (Anserini's JsonCollection reads `.jsonl` and `.jsonl.gz` through a symlink; checked with 1.7.1.)
    """
    target = input_dir / _collection_name(corpus)
    try:
        target.symlink_to(corpus)
        return target
    except OSError as err:
        logger.info("cannot symlink %s (%s); trying a hard link", corpus, err)
    try:
        os.link(corpus, target)
        return target
    except OSError as err:
        logger.warning("cannot link %s (%s); copying it for the indexer", corpus, err)
    shutil.copyfile(corpus, target)
    return target


def _remove_dead_partials(out_dir: Path) -> None:
    """Temp folders of builds of `out_dir` whose process is gone (killed without cleanup)."""
    for partial in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        pid = partial.name.rpartition("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def build_bm25_index(corpus: Path, out_dir: Path, threads: int = 2, *, skip_bad_lines: bool = False) -> Path:
    """Index `corpus` (wiki-18 JSONL, optionally gzipped) into a Lucene index at `out_dir`.

    Runs pyserini's own indexer (positions, doc vectors and raw docs stored) in a subprocess, into a
    temp folder beside `out_dir` that is renamed to it on success. Returns `out_dir`. On failure or
    interruption (an exception, KeyboardInterrupt, the thread's BuildScope stopped) the indexer is
    ended and the temp folder removed before the exception propagates: RuntimeError (indexer failed),
    BuildInterrupted, KeyboardInterrupt.

    The corpus is validated first (search_env.corpus_validation): a bad line raises BadRecordError
    naming it (pyserini would fail the whole file with a Java stack trace), or with `skip_bad_lines`
    is left out; the indexer then reads a cleaned copy (also written when ids need normalising).
    """
    corpus, out_dir, check = check_build_paths(corpus, out_dir, skip_bad_lines=skip_bad_lines)
    _remove_dead_partials(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "input").mkdir(parents=True)
    index_dir = tmp / "index"
    started = time.perf_counter()
    try:
        if check.needs_copy:
            write_clean_corpus(check, tmp / "input" / "corpus.jsonl")
        else:
            _link_corpus(corpus, tmp / "input")
        counters = run_indexer([
            "--collection", "JsonCollection", "--input", str(tmp / "input"), "--index", str(index_dir),
            "--generator", "DefaultLuceneDocumentGenerator", "--threads", str(threads),
            "--storePositions", "--storeDocvectors", "--storeRaw",
        ])
        indexed = counters.get("indexed", 0)
        if indexed == 0:
            raise RuntimeError(f"the Lucene indexer indexed none of the {check.passages} passages of {corpus} "
                               f"({counters}); its log has the reason")
        if indexed != check.passages:
            logger.warning("the Lucene indexer indexed %d of the %d passages of %s (%s)", indexed, check.passages,
                           corpus, counters)
        stat = corpus.stat()
        meta = {
            "backend": "bm25",
            "corpus": {"path": str(corpus), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
            "count": counters["indexed"],
            "skipped_lines": check.skipped,
            "counters": counters,
            "threads": threads,
            "build_seconds": round(time.perf_counter() - started, 3),
            "searchgym_version": __version__,
        }
        publish_build(index_dir, out_dir, META, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _passage_of_raw(raw: str) -> tuple[str | None, str]:
    """(id, contents) of a stored raw doc; JSON with `contents`, or `title`+`text`, or plain text."""
    try:
        record = json.loads(raw)
    except json.JSONDecodeError:
        return None, raw
    if not isinstance(record, dict):
        return None, raw
    passage_id = str(record["id"]) if "id" in record else None
    if "contents" in record:
        return passage_id, str(record["contents"])
    return passage_id, format_contents(str(record.get("title", "")), str(record.get("text", "")))


class BM25Retriever:
    """BM25 (pyserini defaults k1=0.9, b=0.4) over a Lucene index, batches searched in parallel.

    Passages are read from the corpus's PassageStore by docid when the corpus is known and unchanged
    (an index we built records it; an index without raw docs needs `corpus`), else from each hit's
    stored raw JSON. The store is the cheaper path: reading a hit's raw document through pyjnius
    (a Document proxy and a call per hit) cost ~0.12-0.15 ms per top-3 query on 2 cores, the store
    read of the same passages batched ~0.09 (benchmarks/bm25_profile.py).
    """

    name = "bm25"

    def __init__(self, index_dir: str | Path, threads: int = 2, k1: float = 0.9, b: float = 0.4,
                 corpus: str | Path | None = None) -> None:
        self.index_dir = Path(index_dir).absolute()
        if not self.index_dir.is_dir():
            raise FileNotFoundError(f"no Lucene index at {self.index_dir}")
        self.threads, self.k1, self.b = threads, k1, b
        self.java = configure_java()
        # Anserini's SimpleSearcher directly: pyserini's LuceneSearcher wrapper does the same calls
        # but its module imports torch + transformers (~10 s) for the dense encoders we do not use.
        from pyserini.pyclass import JArrayList, autoclass

        self._array_list = JArrayList
        self._searcher = autoclass("io.anserini.search.SimpleSearcher")(str(self.index_dir))
        self._searcher.set_bm25(float(k1), float(b))
        self._count = int(self._searcher.get_total_num_docs())
        self.raw_docs = self._count > 0 and self._searcher.doc(0).get("raw") is not None
        meta_path = self.index_dir / META
        self.meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self._store: PassageStore | None = None
        if not self.raw_docs:
            if corpus is None:
                raise ValueError(
                    f"the Lucene index {self.index_dir} stores no raw passages; pass the corpus it was "
                    "built from (corpus=... / --corpus) to look passages up by docid"
                )
            self._store = cached_store(Path(corpus))
        elif (indexed := self._indexed_corpus()) is not None:
            self._store = cached_store(indexed)

    def _indexed_corpus(self) -> Path | None:
        """The corpus this index was built from (recorded by build_bm25_index), if it is still there,
        unchanged, and was indexed whole: its rows are then exactly the indexed documents."""
        recorded = self.meta.get("corpus") or {}
        path = Path(recorded["path"]) if recorded.get("path") else None
        if path is None or not path.is_file() or self.meta.get("skipped_lines", 0):
            return None
        stat = path.stat()
        return path if (stat.st_size, stat.st_mtime_ns) == (recorded.get("size"), recorded.get("mtime_ns")) else None

    def __len__(self) -> int:
        return self._count

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        results: list[list[Hit]] = [[] for _ in queries]
        todo = [i for i, q in enumerate(queries) if q.strip()]
        if not todo or k <= 0:
            return results
        jqueries, jqids = self._array_list(), self._array_list()
        for i in todo:
            jqueries.add(queries[i])
            jqids.add(str(i))
        found = self._searcher.batch_search(jqueries, jqids, int(k), int(self.threads))
        if self._store is None:
            for i in todo:
                for h in found.get(str(i)) or []:
                    raw_id, contents = _passage_of_raw(h.lucene_document.get("raw"))
                    results[i].append(Hit(raw_id or h.docid, contents, float(h.score)))
            return results
        # Two field reads per hit, and the whole batch's passages in one store lookup.
        scored = [(i, [(h.docid, float(h.score)) for h in found.get(str(i)) or []]) for i in todo]
        passages = iter(self._store.get_ids([docid for _, hits in scored for docid, _ in hits]))
        for i, hits in scored:
            mine = [next(passages) for _ in hits]
            results[i] = [Hit(p.id, p.contents, score) for (_, score), p in zip(hits, mine, strict=True)]
        return results

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "index": str(self.index_dir),
            "passages": self._count,
            "k1": self.k1,
            "b": self.b,
            "threads": self.threads,
            "raw_docs": self.raw_docs,
            "passages_from": "corpus" if self._store is not None else "raw docs",
            "corpus": str(self._store.corpus_path) if self._store else self.meta.get("corpus", {}).get("path"),
            "java": ".".join(map(str, self.java.version)),
        }

    def close(self) -> None:
        self._searcher.close()
        if self._store is not None:
            self._store.close()

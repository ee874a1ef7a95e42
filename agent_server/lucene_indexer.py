"""`python -m agent_server.lucene_indexer ARGS`: pyserini's Lucene indexer under our Java setup.

Same arguments as `python -m pyserini.index.lucene`; run in a subprocess so that the JVM it starts
gets configure_java()'s JAVA_HOME and options, and so indexing memory is freed when it exits.
"""

from __future__ import annotations

import runpy
import sys

from agent_server.java_runtime import configure_java


def main(argv: list[str] | None = None) -> None:
    configure_java()
    sys.argv = ["pyserini.index.lucene", *(sys.argv[1:] if argv is None else argv)]
    runpy.run_module("pyserini.index.lucene", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

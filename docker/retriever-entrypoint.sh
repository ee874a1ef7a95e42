#!/bin/sh
# Start `agent-server retriever` with flags built from SEARCHGYM_* environment variables, so that
# docker-compose.yml can switch between the embedded world and a mounted wiki-18 corpus / prebuilt
# indexes by setting variables alone. An unset or empty variable adds no flag. Arguments given to
# this script (the compose `command:`, e.g. `--host 0.0.0.0 --port 8000`) are passed on after them.
#
#   SEARCHGYM_BACKEND      bm25 | dense | hybrid                    (default bm25)
#   SEARCHGYM_WORLD        embedded world preset served when no index is given (default: the CLI's, `default`)
#   SEARCHGYM_BM25_INDEX   a Lucene index directory (ours, or a prebuilt one such as Pyserini's)
#   SEARCHGYM_DENSE_INDEX  a dense index directory built by `agent-server index`
#   SEARCHGYM_CORPUS       wiki-18 JSONL corpus: indexed on first start when no index is given (into the
#                          data volume); also the passages of a prebuilt index that stores no raw docs
#   SEARCHGYM_ENCODER      sentence-transformers model name or path (default: the packaged MiniLM)
#   SEARCHGYM_THREADS      search threads
#   SEARCHGYM_API_TOKEN    read by the server itself (never put on a command line, where `ps` shows it)
#
# With no index variable set, the embedded world is served; its indexes are built on first start
# into $SEARCHGYM_HOME (the searchgym-data volume) and reused on every later start.
#
# The tests (tests/test_compose.py) run this script outside any container with the environment the
# compose file gives it, so it needs nothing but `agent-server` on PATH and a POSIX sh.
set -eu

die() {
    echo "retriever-entrypoint: $*" >&2
    exit 2
}

backend=${SEARCHGYM_BACKEND:-bm25}
case "$backend" in
    bm25 | bm25s | dense | hybrid) ;;
    *) die "SEARCHGYM_BACKEND must be bm25, bm25s, dense or hybrid, not '$backend'" ;;
esac

# A path given through a variable must exist in the container: most often a mistake in the mount.
check_path() { # VAR_NAME PATH
    [ -e "$2" ] || die "$1=$2 does not exist in the container; host paths must lie under \
\$SEARCHGYM_INDEX_DIR (mounted read-only at /indexes), e.g. $1=/indexes/$(basename "$2")"
}

# Our flags go before the caller's arguments (prepended below, last one first), so that a flag in the
# compose `command:` overrides the same flag set through a variable.
if [ -n "${SEARCHGYM_THREADS:-}" ]; then
    set -- --threads "$SEARCHGYM_THREADS" "$@"
fi
if [ -n "${SEARCHGYM_ENCODER:-}" ]; then
    set -- --encoder "$SEARCHGYM_ENCODER" "$@"
fi
if [ -n "${SEARCHGYM_CORPUS:-}" ]; then
    check_path SEARCHGYM_CORPUS "$SEARCHGYM_CORPUS"
    set -- --corpus "$SEARCHGYM_CORPUS" "$@"
fi
if [ -n "${SEARCHGYM_DENSE_INDEX:-}" ]; then
    check_path SEARCHGYM_DENSE_INDEX "$SEARCHGYM_DENSE_INDEX"
    set -- --dense-index "$SEARCHGYM_DENSE_INDEX" "$@"
fi
if [ -n "${SEARCHGYM_BM25_INDEX:-}" ]; then
    check_path SEARCHGYM_BM25_INDEX "$SEARCHGYM_BM25_INDEX"
    set -- --bm25-index "$SEARCHGYM_BM25_INDEX" "$@"
fi
if [ -n "${SEARCHGYM_WORLD:-}" ]; then
    set -- --world "$SEARCHGYM_WORLD" "$@"
fi

# exec: the server becomes this process, so it gets the container's SIGTERM and stops cleanly.
exec agent-server retriever --backend "$backend" "$@"

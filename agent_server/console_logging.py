"""Logging of the `agent-server` commands: everything into a log file, the console kept to searchgym's.

The console (what a user watches, `docker compose logs`) gets searchgym's and uvicorn's records, and
warnings and errors from anything. The chatter of the libraries underneath at start-up, which says
nothing a user acts on, goes only to the log file: the Lucene indexer's ~40 lines per build (relayed
from its subprocess by agent_server.lucene_indexer as "lucene: ..." records), faiss's loader trying
each CPU build, sentence-transformers' model loading, and java.util.logging inside the JVM (Lucene's
"Using MemorySegmentIndexInput with Java 21"), which the JVM writes straight to stderr unless told,
through a logging.properties file given to the JVM, to write to `<log dir>/java.log` instead.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from search_env.home import searchgym_home

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: loggers whose records below WARNING go to the log file only
QUIET_LOGGERS = ("faiss", "sentence_transformers", "jnius", "pyserini", "transformers", "huggingface_hub")
RELAYED_PREFIX = "lucene: "  # agent_server.lucene_indexer's relay of the indexer subprocess


def default_log_file(command: str) -> Path:
    return searchgym_home() / "logs" / f"agent-server-{command}.log"


class ConsoleFilter(logging.Filter):
    """Lets through what a user of the console acts on; the rest is in the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if record.name.split(".")[0] in QUIET_LOGGERS:
            return False
        return not (record.name == "agent_server.lucene_indexer" and str(record.msg).startswith(RELAYED_PREFIX))


def setup_logging(command: str, level: str = "info", log_file: Path | None = None) -> Path:
    """Root logging to `log_file` (default `$SEARCHGYM_HOME/logs/agent-server-<command>.log`, appended)
    and to stderr through `ConsoleFilter`; the JVM's own logging to `java.log` beside it. Returns the file."""
    log_file = Path(log_file) if log_file is not None else default_log_file(command)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(level.upper())
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setFormatter(logging.Formatter(FORMAT))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(FORMAT))
    console.addFilter(ConsoleFilter())
    root.handlers[:] = [to_file, console]
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress
    _java_logging_to_file(log_file.parent)
    logging.getLogger("agent_server").info("log file (with the libraries' messages): %s", log_file)
    return log_file


def _java_logging_to_file(folder: Path) -> None:
    """java.util.logging of a JVM this process starts later (pyserini through jnius) into folder/java.log."""
    try:
        import jnius_config
    except ImportError:  # no BM25 extra: no JVM
        return
    if jnius_config.vm_running:
        return
    properties = folder / "java-logging.properties"
    pattern = str(folder / "java.log").replace("%", "%%")
    properties.write_text(
        "handlers=java.util.logging.FileHandler\n"
        ".level=INFO\n"
        f"java.util.logging.FileHandler.pattern={pattern}\n"
        "java.util.logging.FileHandler.append=true\n"
        "java.util.logging.FileHandler.formatter=java.util.logging.SimpleFormatter\n"
    )
    jnius_config.add_options(f"-Djava.util.logging.config.file={properties}")

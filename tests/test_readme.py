"""The README's Python example runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_the_readme_python_example_runs():
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    scope = {}
    exec(compile(code, str(README), "exec"), scope)
    assert scope["summary"](scope["cfg"])["params"] == 1_967_080  # the figure the README's comment gives
    assert scope["scores"].shape == (2, 1000)

"""The README's promises: its Python examples run as written, it keeps exactly two set-up
commands, and neither it nor the design document points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import raftkv

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert m, f"no section '## {title}' in the README"
    return m.group(1)


PYTHON_BLOCKS = code_blocks(README.read_text(encoding="utf-8"), "python")


def test_the_readme_has_python_examples():
    assert len(PYTHON_BLOCKS) >= 2


@pytest.mark.parametrize(
    "block", [b for b in PYTHON_BLOCKS if "def test_" not in b], ids=lambda b: b.split("\n")[0]
)
def test_a_readme_script_runs(block, tmp_path, monkeypatch, capsys):
    """A script block runs top to bottom in an empty directory (it may write files there)."""
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    if "print(result.ok)" in block:
        assert out.strip().splitlines()[-1] == "True", out


@pytest.mark.parametrize(
    "block", [b for b in PYTHON_BLOCKS if "def test_" in b], ids=lambda b: b.split("\n")[0]
)
def test_a_readme_pytest_example_passes_with_the_plugin_fixtures(block, request):
    """A block that defines tests is run as pytest would: each test function, called with the
    fixtures its parameters name (the raftkv plugin's, here)."""
    import inspect

    namespace: dict[str, object] = {"__name__": "readme_tests"}
    exec(compile(block, str(README), "exec"), namespace)
    tests = {k: v for k, v in namespace.items() if k.startswith("test_") and callable(v)}
    assert tests
    for fn in tests.values():
        args = {name: request.getfixturevalue(name) for name in inspect.signature(fn).parameters}
        fn(**args)


def test_exactly_two_set_up_commands():
    setup = section(README.read_text(encoding="utf-8"), "Set up")
    commands = [
        line.strip()
        for block in code_blocks(setup, "sh")
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert commands == ["pip install . && raftkv demo", "./scripts/test"]


@pytest.mark.parametrize("doc", ["README.md", "docs/design.md", "CHANGELOG.md"])
def test_a_document_points_only_inside_the_repository(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert "shared/" not in text, f"{doc} names ../shared, which is not part of the repository"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path = (ROOT / doc).parent / target
        assert path.resolve().is_relative_to(ROOT), f"{doc} links outside the repository: {target}"
        assert path.exists(), f"{doc} links to {target}, which does not exist"


def test_the_readme_links_the_docs():
    text = README.read_text(encoding="utf-8")
    for target in ("docs/design.md", "docs/api.md", "docs/architecture.svg", "CHANGELOG.md"):
        assert f"]({target}" in text, target


def test_the_architecture_picture_is_an_svg_that_names_every_layer():
    svg = (ROOT / "docs" / "architecture.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<svg") and svg.rstrip().endswith("</svg>")
    for word in ("sans-IO", "driver", "Storage", "Transport", "Runtime", "checker", "PyO3"):
        assert word in svg, word


def test_the_api_reference_names_every_public_name():
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    for name in raftkv.__all__:
        assert f"`{name}" in api or f"`class {name}" in api, name

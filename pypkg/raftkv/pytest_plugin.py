"""raftkv's pytest plugin (registered through the ``pytest11`` entry point on install).

Fixtures:

- ``raftkv_cluster``: a started 3-node :class:`raftkv.LocalCluster` on LMDB under the test's
  ``tmp_path`` with a leader; healed, made reliable and closed after the test.
- ``raftkv_history``: a fresh :class:`raftkv.History`.
- ``raftkv_check``: a function ``raftkv_check(history=None, timeout=60.0, allow_unknown=False)``
  that checks ``history`` (default: the test's ``raftkv_history``) for linearizability and
  returns the result. When the history is not linearizable (or unknown, unless
  ``allow_unknown``) it writes the HTML visualization and fails the test with a message that
  names the file. The file goes to ``--raftkv-html-dir`` if given, else next to the test's
  report: the directory of ``--junitxml`` when set, else ``<rootdir>/raftkv-html/``. Its name is
  the test's node id made safe for a file name. The path is also added to the test's
  ``user_properties`` (``raftkv_html``, shown in JUnit XML) and to its report sections.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Callable, Iterator

import pytest

import raftkv

#: The type of the ``raftkv_check`` fixture's value.
CheckFunction = Callable[..., raftkv.CheckOutcome]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Adds ``--raftkv-html-dir`` to pytest's options."""
    group = parser.getgroup("raftkv")
    group.addoption(
        "--raftkv-html-dir",
        default=None,
        help="where raftkv_check writes the HTML of a failed linearizability check "
        "(default: beside --junitxml, else <rootdir>/raftkv-html)",
    )


def _html_dir(config: pytest.Config) -> str:
    d: str | None = config.getoption("--raftkv-html-dir", default=None)
    if d:
        return os.path.abspath(d)
    xml: str | None = getattr(config.option, "xmlpath", None)
    if xml:
        return os.path.dirname(os.path.abspath(xml))
    return os.path.join(str(config.rootpath), "raftkv-html")


def _html_path(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")
    d = _html_dir(request.config)
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, f"raftkv-{name[:180]}.html")


@pytest.fixture
def raftkv_history() -> raftkv.History:
    """A fresh, thread-safe raftkv.History."""
    return raftkv.History()


@pytest.fixture
def raftkv_cluster(tmp_path: pathlib.Path) -> Iterator[raftkv.LocalCluster]:
    """A 3-node LocalCluster on LMDB under tmp_path, with a leader; closed after the test."""
    cluster = raftkv.LocalCluster(n=3, storage="lmdb", data_dir=str(tmp_path / "raftkv"))
    try:
        cluster.wait_leader(timeout=10.0)
        yield cluster
    finally:
        try:
            cluster.heal()
            cluster.set_reliable()
        except raftkv.Error:
            pass
        cluster.close()


@pytest.fixture
def raftkv_check(request: pytest.FixtureRequest) -> CheckFunction:
    """``raftkv_check(history=None, timeout=60.0, allow_unknown=False)``: checks the history
    (default: this test's ``raftkv_history``); on a failure writes the HTML and fails the test
    naming the file. Returns the check result."""

    def check(
        history: raftkv.History | None = None,
        timeout: float | None = 60.0,
        allow_unknown: bool = False,
    ) -> raftkv.CheckOutcome:
        if history is None:
            history = request.getfixturevalue("raftkv_history")
            assert isinstance(history, raftkv.History)
        result = raftkv.check_linearizable(history, timeout=timeout)
        if result.ok is True or (result.ok is None and allow_unknown):
            return result
        path = _html_path(request)
        result.visualize(path)
        request.node.user_properties.append(("raftkv_html", path))
        request.node.add_report_section("call", "raftkv", f"linearizability check: {path}")
        what = (
            "not linearizable"
            if result.ok is False
            else (f"linearizability unknown ({result.reason or 'undecided'})")
        )
        pytest.fail(
            f"history of {len(history)} ops is {what}; visualization: {path}", pytrace=False
        )

    return check

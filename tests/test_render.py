"""The checker's HTML, as ``CheckOutcome.visualize`` writes it from Python, rendered by headless
Chromium: its script runs and it draws every operation.

Without Chromium the test skips on a developer's machine; under CI (``CI=true``) it fails, since
``.ci/run`` installs Chromium and a skip there would hide a missing install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

import raftkv


def chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        msg = f"no Chromium at {path} (set CHROMIUM to its path)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{msg}; CI must install it (.ci/run does, with apt-get)", pytrace=False)
        pytest.skip(msg)
    return path


def op(client, call, ret, inp, out):
    return {"client": client, "call": call, "return": ret, "input": inp, "output": out}


def put(key, value):
    return {"op": "put", "key": key, "value": value, "version": None}


def get(key):
    return {"op": "get", "key": key, "value": None, "version": None}


def answer(value=None, version=None):
    return {"value": value, "version": version, "err": None}


#: two keys: "a" is fine; "b" reads a value nobody wrote (not linearizable)
HISTORY = {
    "model": "kv",
    "ops": [
        op(0, 100, 200, put("a", "1"), answer(version=1)),
        op(1, 300, 400, get("a"), answer("1", 1)),
        op(0, 500, 600, put("b", "x"), answer(version=1)),
        op(1, 700, 800, get("b"), answer("never-written", 1)),
    ],
}


def test_chromium_renders_the_visualization_and_runs_its_script(tmp_path):
    browser = chromium()
    history = raftkv.History.from_json(json.dumps(HISTORY))
    result = raftkv.check_linearizable(history, timeout=60.0)
    assert result.ok is False and result.partitions == 2
    page = tmp_path / "history.html"
    result.visualize(str(page))
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'data-ready="yes"' in dom, f"the page's script did not run: {dom[:400]}"
    assert f'data-op-count="{len(HISTORY["ops"])}"' in dom, "the script saw every bar"
    assert dom.count('<section class="partition') == 2
    assert dom.count('<g class="op ') == len(HISTORY["ops"])

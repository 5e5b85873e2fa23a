"""Every public class, function and property of the package has a docstring at run time (the
extension's come from its Rust source), so that help() and docs/api.md say what each one does."""

from __future__ import annotations

import inspect

import pytest

import raftkv
import raftkv.cli
from raftkv import faults, procs, pytest_plugin

MODULES = [raftkv, raftkv.cli, faults, procs]


def public_objects():
    for mod in MODULES:
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isclass(obj) or inspect.isroutine(obj):
                yield f"{mod.__name__}.{name}", obj
                if inspect.isclass(obj) and not issubclass(obj, BaseException):
                    for member, value in vars(obj).items():
                        if member.startswith("_") or isinstance(value, property):
                            continue
                        if callable(value) or isinstance(value, staticmethod | classmethod):
                            yield f"{mod.__name__}.{name}.{member}", getattr(obj, member)
    for name in ("raftkv_cluster", "raftkv_history", "raftkv_check"):
        yield f"raftkv.pytest_plugin.{name}", getattr(pytest_plugin, name)


@pytest.mark.parametrize("qualname,obj", list(public_objects()), ids=lambda x: str(x))
def test_has_a_docstring(qualname, obj):
    doc = inspect.getdoc(obj)
    assert doc and len(doc.split()) >= 3, f"{qualname} has no docstring worth the name"


def public_properties():
    """Every public property (Python ``property`` or an extension's getter) of a public class."""
    for mod in MODULES:
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not inspect.isclass(obj) or issubclass(obj, BaseException):
                continue
            for member, value in vars(obj).items():
                if member.startswith("_"):
                    continue
                if isinstance(value, property) or inspect.isgetsetdescriptor(value):
                    yield f"{mod.__name__}.{name}.{member}", value


@pytest.mark.parametrize("qualname,prop", list(public_properties()), ids=lambda x: str(x))
def test_property_has_a_docstring(qualname, prop):
    doc = inspect.getdoc(prop)
    assert doc and len(doc.split()) >= 3, f"{qualname} has no docstring worth the name"


def test_every_module_has_a_docstring():
    for mod in [*MODULES, pytest_plugin]:
        assert (mod.__doc__ or "").strip(), mod.__name__

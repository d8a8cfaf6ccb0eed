"""``meshlite``'s public names load on first use (PEP 562): each one resolves, the lazy
table and ``__all__`` name the same things, and a CLI client process does not import the
mesh, Raft or HTTP server modules it never uses."""

from __future__ import annotations

import subprocess
import sys

import pytest

import meshlite


def test_every_public_name_resolves_and_the_tables_agree() -> None:
    assert sorted(meshlite._EXPORTS) == sorted(meshlite.__all__)
    for name in meshlite.__all__:
        assert getattr(meshlite, name) is not None, name
        assert name in dir(meshlite)
    assert meshlite.Mesh.__module__ == "meshlite._mesh"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="Mseh"):
        meshlite.Mseh  # type: ignore[attr-defined]  # noqa: B018


def test_the_cli_module_does_not_import_the_mesh() -> None:
    code = (
        "import sys, meshlite.cli;"
        "print(sorted(m for m in ('meshlite._mesh', 'meshlite._raft_server', 'meshlite._http.app')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

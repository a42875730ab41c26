"""Every refusal the unit tests provoke in the rules' modules names the function that makes it."""

import pathlib
import sys

import pytest
from support.refusals import NAMING_MODULES, PACKAGE

from gmemfs.kernel.rules import GmemError


@pytest.fixture(autouse=True)
def refusals_name_their_function(monkeypatch):
    """Fails a test in which one of NAMING_MODULES made a GmemError without a function."""
    unnamed = []
    original = GmemError.__init__

    def init(self, err, rule, *, function=""):
        original(self, err, rule, function=function)
        where = sys._getframe(1).f_code.co_filename
        if not function and where in NAMING_MODULES:
            unnamed.append(f"{pathlib.Path(where).relative_to(PACKAGE)}: {rule}")

    monkeypatch.setattr(GmemError, "__init__", init)
    yield
    assert not unnamed, f"GmemError without function=: {unnamed}"

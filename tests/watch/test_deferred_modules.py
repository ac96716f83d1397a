"""A module deferred while kubernetes_asyncio's client imports loads for real on first use, and
never stays in ``sys.modules`` as a stand-in for later importers."""

from __future__ import annotations

import sys

import pytest

from app.watch import lean_import

MODULE = "colorsys"  # small, pure, and imported by nothing else in the test process


@pytest.fixture
def not_imported() -> None:
    sys.modules.pop(MODULE, None)


@pytest.mark.usefixtures("not_imported")
def test_a_name_taken_from_a_deferred_module_imports_it_on_first_call() -> None:
    with lean_import.standing_in({MODULE: ("rgb_to_hsv",)}):
        from colorsys import rgb_to_hsv

        assert MODULE not in sys.modules or isinstance(sys.modules[MODULE], lean_import.DeferredModule)
    assert MODULE not in sys.modules
    assert rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)
    assert MODULE in sys.modules
    assert not isinstance(sys.modules[MODULE], lean_import.DeferredModule)


@pytest.mark.usefixtures("not_imported")
def test_reading_any_other_attribute_imports_the_real_module() -> None:
    with lean_import.standing_in({MODULE: ()}):
        import colorsys

    assert isinstance(colorsys, lean_import.DeferredModule)
    assert colorsys.hls_to_rgb(0.0, 0.5, 1.0) == (1.0, 0.0, 0.0)
    assert sys.modules[MODULE].hls_to_rgb is colorsys.hls_to_rgb


def test_a_module_already_imported_is_left_alone() -> None:
    import json

    with lean_import.standing_in({"json": ("loads",)}):
        from json import loads

    assert loads is json.loads

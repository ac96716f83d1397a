"""The shim's JSON parsing also works inside a process that has loaded ``json`` (the console script,
or anything importing ``app.shim.shim``): the C scanner then raises the real ``JSONDecodeError``."""

from __future__ import annotations

import json
import json.decoder
import subprocess
import sys
from pathlib import Path

import pytest

from app.shim.shim import JsonSyntaxError, parse_json
from tests.shim.helpers import BASE_ENV, ShimRun


def test_json_is_loaded_here() -> None:
    assert "json.decoder" in sys.modules
    assert json.loads("1") == 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"a": "\\q"}', "invalid character 'q' in string escape code"),
        ('{"a" 1}', "invalid character '1' after object key"),
        ('{"a": 1', "unexpected end of JSON input"),
        ("[1,]", "invalid character ']' looking for beginning of value"),
        ("[1] [", "invalid character '[' after top-level value"),
        ("[Infinity]", "invalid character 'I' looking for beginning of value"),
    ],
)
def test_syntax_errors_are_worded_like_go(text: str, reason: str) -> None:
    with pytest.raises(JsonSyntaxError) as raised:
        parse_json(text)
    assert str(raised.value) == reason
    assert sys.modules["json.decoder"] is json.decoder  # the real one stayed


def test_objects_come_with_lower_cased_keys_the_last_duplicate_winning() -> None:
    assert parse_json(' {"Name": 1, "NAME": 2, "b": {"C": [1e400, 10]}} \n') == {
        "name": 2,
        "b": {"c": [float("inf"), 10]},
    }


def test_keys_fold_as_gos_decoder_folds_them_long_s_and_kelvin_sign_included() -> None:
    # Go matches a key to a field by unicode.SimpleFold: "\u017f" (long s) is "s", "\u212a" (Kelvin) "k";
    # the dotted and dotless i are no "i" to it. str.lower() alone left the long s as it was.
    keys = ["daemon\u017focketDir", "\u212aey", "cn\u0131Version", "cn\u0130Version"]
    folded = parse_json(json.dumps(dict.fromkeys(keys, 1)))
    assert isinstance(folded, dict)
    assert "daemonsocketdir" in folded
    assert "key" in folded
    assert "cniversion" not in folded


def test_shim_main_in_a_process_that_imported_json_reports_syntax_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import json; from app.shim.shim import main; main()"],
        input=b'{"name": "x", "a": "\\q"}',
        env={**BASE_ENV, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        timeout=20,
        check=False,
    )
    run = ShimRun(proc.returncode, proc.stdout, proc.stderr)
    assert run.error() == {
        "code": 6,
        "msg": "error unmarshall network config: invalid character 'q' in string escape code",
    }

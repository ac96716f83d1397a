"""The API path of a NAD names that one object, whatever its namespace and name hold.

The names reaching it are validated first (``app.attach.selection``), but the path is built for
every NAD lookup, the daemon-config's references included: a name holding ``../`` must not walk
to another object (another namespace's NAD, past ``namespaceIsolation``), nor ``?`` start a query.
"""

from __future__ import annotations

import pytest

from app.sandbox.kubeapi import KubeApiEmulator
from app.watch.api import KubeApi
from app.watch.errors import ApiNotFoundError
from app.watch.resources import nad_path
from tests.watch.support import nad_config


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("default", "../../secret/network-attachment-definitions/hidden"),
        ("secret", "hidden?watch=true"),
        ("secret", "x/../hidden"),
    ],
)
async def test_a_nad_name_holding_a_path_or_a_query_reaches_no_other_object(
    emulator: KubeApiEmulator, api: KubeApi, namespace: str, name: str
) -> None:
    emulator.create_namespace("secret")
    emulator.create_nad("secret", "hidden", nad_config("hidden"))

    with pytest.raises(ApiNotFoundError):
        await api.get(nad_path(namespace, name))


async def test_a_nad_of_an_ordinary_name_is_found(emulator: KubeApiEmulator, api: KubeApi) -> None:
    emulator.create_namespace("secret")
    emulator.create_nad("secret", "hidden.v1-a", nad_config("hidden"))

    found = await api.get(nad_path("secret", "hidden.v1-a"))

    assert found["metadata"]["name"] == "hidden.v1-a"

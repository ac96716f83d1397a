"""The CNI verbs on a network configuration list: ADD, DEL, CHECK, GC, STATUS, VERSION (libcni ``api.go``).

Called by ``app.attach`` (and GC/STATUS by the daemon). Owns the order and version rules: ADD runs
the plugins forward threading ``prevResult``; DEL runs them in reverse with the ADD's result; CHECK
needs 0.4.0; GC and STATUS need 1.1.0. Each verb is a short loop over a private per-plugin step that
builds the stdin (``app.cni.conf``), runs the plugin (``app.cni.invoke``) and decodes its output
(``app.cni.results``). Never caches or records anything: the caller persists results and intents.

Errors keep the plugin's code and gain the context ``plugin type="bridge" name="<network>" failed (add)``.
Every plugin of a list is looked up before any executes: a bad or missing ``type`` anywhere refuses
the whole list. ADD, CHECK and STATUS raise the first ``CniError``. DEL and GC try every plugin and
raise an ``ExceptionGroup`` of ``CniError`` whenever anything failed, also when only one plugin failed
or the list was refused up front, so callers handle one shape: ``except* CniError``. ADD and CHECK
refuse a bad container ID, interface or network name before running anything; DEL checks none of
them, so that it can always tear down what an ADD may have left.

Where a list's ADD stopped is named in the error it raises (``ListAddError.failure``); given that
``AddFailure``, a DEL of the same list takes a plugin after it (which never ran), and the plugin
that refused the config (exited non-zero by itself) failing with the very same error object, for
what they are (``RefusedAlikeError``), not for failures that may pass, while the list's other
plugins are DELed as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from app.cni import conf, invoke, names, results
from app.cni.types import (
    Attachment,
    CniError,
    ErrorCode,
    JsonObject,
    NetworkConfigList,
    NotExecutedError,
    PluginExitError,
    RefusedAlikeError,
    RuntimeConf,
)

logger = logging.getLogger(__name__)

CHECK_SINCE: Final = "0.4.0"
DEL_PREV_RESULT_SINCE: Final = "0.4.0"
GC_STATUS_SINCE: Final = "1.1.0"
DEFAULT_EXEC: Final = invoke.SubprocessExec()


@dataclass(frozen=True, slots=True)
class CniConfig:
    """Where plugins are and how to run them (libcni ``CNIConfig``).

    ``path``: directories searched in order (``CNI_PATH``). ``timeout``: seconds per plugin
    execution. ``base_env``: the environment plugins get besides the ``CNI_*`` variables.
    ``chroot_dir``: the root every plugin runs in (upstream's ``chrootDir``; "" = the daemon's own):
    ``path`` is searched inside it, and each plugin is executed in ``chroot(chroot_dir)`` with the
    same environment and stdin. ``input_after``: no plugin reads its input before this future is
    done; one may be started meanwhile (``invoke``'s ``ready``; None: nothing to wait for).
    ``wanted``: asked when each plugin's turn comes, before it starts; False, and it is not started
    (``invoke``'s ``wanted``; None: always).
    """

    path: tuple[str, ...]
    timeout: float = 60.0
    exec: invoke.Exec = DEFAULT_EXEC
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(invoke.DEFAULT_BASE_ENV))
    chroot_dir: str = ""
    input_after: asyncio.Future[None] | None = None
    wanted: Callable[[], bool] | None = None


@dataclass(frozen=True, slots=True)
class _Step:
    """One plugin of a list, found on disk."""

    plugin: JsonObject
    plugin_path: str

    @property
    def type(self) -> str:
        return conf.plugin_type(self.plugin)


@dataclass(frozen=True, slots=True)
class AddFailure:
    """Where a list's ADD stopped: plugin ``plugin`` (its index) failed with this error object, and
    no plugin after it ran. ``refused``: it exited non-zero by itself with a code that does not ask
    for a retry (not 11): it refused the config."""

    plugin: int
    code: int
    msg: str
    details: str = ""
    refused: bool = False

    @classmethod
    def of(cls, plugin: int, error: CniError) -> AddFailure:
        refused = isinstance(error, PluginExitError) and not error.transient
        return cls(plugin, error.code, error.msg, error.details, refused)

    def excuses(self, plugin: int, error: CniError) -> str | None:
        """Why plugin ``plugin`` failing its DEL with ``error`` leaves nothing of it on the node,
        or None: a plugin after the one the ADD stopped at never ran; the one that refused the
        config, refusing it again with the same code, message and details, created nothing."""
        if plugin > self.plugin:
            return "the plugin never ran: the ADD stopped at an earlier one"
        if (
            plugin == self.plugin
            and self.refused
            and isinstance(error, PluginExitError)
            and (error.code, error.msg, error.details) == (self.code, self.msg, self.details)
        ):
            return "the plugin refused this config at ADD alike: nothing of it was created"
        return None

    def to_json(self) -> JsonObject:
        return {
            "plugin": self.plugin,
            "refused": self.refused,
            **CniError(self.code, self.msg, self.details).to_json(),
        }

    @classmethod
    def from_json(cls, obj: object) -> AddFailure | None:
        """The failure ``to_json`` wrote; None for anything else."""
        if not isinstance(obj, dict):
            return None
        plugin, refused = obj.get("plugin"), obj.get("refused")
        error = CniError.from_json(obj)
        if not isinstance(plugin, int) or isinstance(plugin, bool) or plugin < 0 or error is None:
            return None
        return cls(plugin, error.code, error.msg, error.details, refused is True)


class ListAddError(CniError):
    """What ADD raises when a plugin of the list failed after it began: its error with the list's
    context, and where the ADD stopped (``AddFailure``), which every DEL of it is given."""

    def __init__(self, code: int, msg: str, details: str = "", *, failure: AddFailure | None = None) -> None:
        super().__init__(code, msg, details)
        self.failure = failure


# --- the verbs ------------------------------------------------------------------------------------


async def add_network_list(*, cni: CniConfig, net: NetworkConfigList, rt: RuntimeConf) -> JsonObject:
    """ADD every plugin in order; the last plugin's result, in ``net.cni_version``.

    Raises ``NotExecutedError`` only when no plugin of the list was executed, else ``ListAddError``
    naming where it stopped.
    """
    steps = preflight_add(cni=cni, net=net, rt=rt)
    result: JsonObject | None = None
    for index, step in enumerate(steps):
        try:
            result = await _add_network(cni, net, step, prev_result=result, rt=rt)
        except CniError as err:
            failed = err.with_context(_describe(step, net, "add"))
            if index or not isinstance(failed, NotExecutedError):  # a plugin of the list ran
                failed = ListAddError(
                    failed.code, failed.msg, failed.details, failure=AddFailure.of(index, err)
                )
            raise failed from err
    assert result is not None, "_locate returns at least one step"
    return result


def preflight_add(*, cni: CniConfig, net: NetworkConfigList, rt: RuntimeConf) -> list[_Step]:
    """What ADD checks before executing anything: the names of ``rt`` and ``net``, every plugin found.

    Raises ``NotExecutedError`` (``PluginRefusedError`` for a ``type`` refused by name), code 7 for a
    plugin, naming it; callers run it before recording anything about an ADD.
    """
    try:
        _check_attachment(net, rt)
    except CniError as err:
        raise NotExecutedError(err.code, err.msg, err.details) from err
    return _locate(cni, net, verb="add")


async def del_network_list(
    *,
    cni: CniConfig,
    net: NetworkConfigList,
    rt: RuntimeConf,
    prev_result: JsonObject | None,
    prev_result_prepared: bool = False,
    add_failure: AddFailure | None = None,
) -> None:
    """DEL every plugin in reverse order, each given ``prev_result`` (the ADD's result) from 0.4.0 on.

    ``prev_result_prepared``: ``prev_result`` is what ``prev_result_for_del`` returned for ``net``
    (converted and validated already). ``add_failure``: where the list's ADD stopped; a plugin it
    excuses (``AddFailure.excuses``) failing is a ``RefusedAlikeError``. Raises
    ``ExceptionGroup[CniError]`` after trying every plugin if any failed.
    """
    try:
        steps = _locate(cni, net, verb="delete")
        prev = prev_result if prev_result_prepared else prev_result_for_del(net, prev_result)
    except CniError as err:
        raise ExceptionGroup(f'DEL of network "{net.name}" refused', [err]) from None
    errors: list[CniError] = []
    for index in reversed(range(len(steps))):
        step = steps[index]
        try:
            await _del_network(cni, net, step, prev_result=prev, rt=rt)
        except CniError as err:
            failed = err.with_context(_describe(step, net, "delete"))
            excuse = add_failure.excuses(index, err) if add_failure is not None else None
            if excuse is not None:
                failed = RefusedAlikeError(failed.code, f"{failed.msg} ({excuse})", failed.details)
            errors.append(failed)
    if errors:
        raise ExceptionGroup(
            f'DEL of network "{net.name}" failed in {len(errors)} of {len(steps)} plugins', errors
        )


async def check_network_list(
    *, cni: CniConfig, net: NetworkConfigList, rt: RuntimeConf, prev_result: JsonObject
) -> None:
    """CHECK every plugin in order against ``prev_result``; a no-op when the list sets ``disableCheck``."""
    if not results.version_at_least(net.cni_version, CHECK_SINCE):
        raise CniError(
            ErrorCode.INCOMPATIBLE_VERSION,
            f'configuration version "{net.cni_version}" does not support the CHECK command',
        )
    if net.disable_check:
        return
    _check_attachment(net, rt)
    steps = _locate(cni, net, verb="check")
    prev = _converted(prev_result, net, what="prevResult")
    for step in steps:
        try:
            await _check_network(cni, net, step, prev_result=prev, rt=rt)
        except CniError as err:
            raise err.with_context(_describe(step, net, "check")) from err


async def gc_network_list(
    *, cni: CniConfig, net: NetworkConfigList, valid_attachments: Sequence[Attachment]
) -> None:
    """GC every plugin, telling it which attachments are still valid (1.1.0 and not ``disableGC``).

    Only the plugins' own GC: removing stale attachments through DEL is the caller's job. Raises
    ``ExceptionGroup[CniError]`` after trying every plugin if any failed.
    """
    if not results.version_at_least(net.cni_version, GC_STATUS_SINCE) or net.disable_gc:
        return
    try:
        steps = _locate(cni, net, verb="gc")
    except CniError as err:
        raise ExceptionGroup(f'GC of network "{net.name}" refused', [err]) from None
    attachments = [{"containerID": item.container_id, "ifname": item.ifname} for item in valid_attachments]
    errors: list[CniError] = []
    for step in steps:
        try:
            await _gc_network(cni, net, step, attachments=attachments)
        except CniError as err:
            errors.append(err.with_context(_describe(step, net, "gc")))
    if errors:
        raise ExceptionGroup(
            f'GC of network "{net.name}" failed in {len(errors)} of {len(steps)} plugins', errors
        )


async def status_network_list(*, cni: CniConfig, net: NetworkConfigList) -> None:
    """STATUS every plugin (1.1.0; earlier versions succeed); the first error, 50/51 included, is raised.

    Every plugin is looked up first, whatever the version (libcni skips a list below 1.1.0 whole):
    one that is missing fails every ADD, so a list before STATUS existed is not available either.
    """
    steps = _locate(cni, net, verb="status")
    if not results.version_at_least(net.cni_version, GC_STATUS_SINCE):
        return
    for step in steps:
        try:
            await _run(
                cni,
                step,
                command="STATUS",
                stdin=conf.plugin_stdin(step.plugin, name=net.name, cni_version=net.cni_version),
            )
        except CniError as err:
            raise err.with_context(_describe(step, net, "status")) from err


async def version(
    *, cni: CniConfig, plugin_type: str, cni_version: str = results.LATEST_VERSION
) -> JsonObject:
    """The VERSION answer of plugin ``plugin_type``: ``{"cniVersion", "supportedVersions"}``."""
    plugin_path = cni.exec.find_in_path(plugin_type, cni.path, root=cni.chroot_dir)
    stdin = conf.encode({"cniVersion": cni_version}, what="VERSION request")
    step = _Step(plugin={"type": plugin_type}, plugin_path=plugin_path)
    stdout = await _run(cni, step, command="VERSION", stdin=stdin)
    return results.decode_version_info(stdout, plugin=plugin_type)


# --- per-plugin steps -----------------------------------------------------------------------------


async def _add_network(
    cni: CniConfig, net: NetworkConfigList, step: _Step, *, prev_result: JsonObject | None, rt: RuntimeConf
) -> JsonObject:
    stdin = conf.plugin_stdin(
        step.plugin,
        name=net.name,
        cni_version=net.cni_version,
        prev_result=prev_result,
        capability_args=rt.capability_args,
    )
    stdout = await _run(cni, step, command="ADD", stdin=stdin, rt=rt)
    version = net.cni_version
    return results.decode_result(stdout, version=version, plugin=step.type, to_version=version)


async def _del_network(
    cni: CniConfig, net: NetworkConfigList, step: _Step, *, prev_result: JsonObject | None, rt: RuntimeConf
) -> None:
    stdin = conf.plugin_stdin(
        step.plugin,
        name=net.name,
        cni_version=net.cni_version,
        prev_result=prev_result,
        capability_args=rt.capability_args,
    )
    await _run(cni, step, command="DEL", stdin=stdin, rt=rt)


async def _check_network(
    cni: CniConfig, net: NetworkConfigList, step: _Step, *, prev_result: JsonObject, rt: RuntimeConf
) -> None:
    stdin = conf.plugin_stdin(
        step.plugin,
        name=net.name,
        cni_version=net.cni_version,
        prev_result=prev_result,
        capability_args=rt.capability_args,
    )
    await _run(cni, step, command="CHECK", stdin=stdin, rt=rt)


async def _gc_network(
    cni: CniConfig, net: NetworkConfigList, step: _Step, *, attachments: list[JsonObject]
) -> None:
    # "cni.dev/attachments" is the spec's earlier, misspelt key; libcni still sends both.
    extra = {"cni.dev/valid-attachments": attachments, "cni.dev/attachments": attachments}
    await _run(
        cni,
        step,
        command="GC",
        stdin=conf.plugin_stdin(step.plugin, name=net.name, cni_version=net.cni_version, extra=extra),
    )


async def _run(
    cni: CniConfig, step: _Step, *, command: invoke.Command, stdin: bytes, rt: RuntimeConf | None = None
) -> bytes:
    env = invoke.plugin_env(command=command, cni_path=cni.path, base_env=cni.base_env, rt=rt)
    logger.debug(
        "CNI %s plugin=%s container=%s ifname=%s root=%s",
        command,
        step.plugin_path,
        rt.container_id if rt else "-",
        rt.ifname if rt else "-",
        cni.chroot_dir or "/",
    )
    return await cni.exec.exec_plugin(
        plugin_path=step.plugin_path,
        stdin=stdin,
        env=env,
        timeout=cni.timeout,
        root=cni.chroot_dir,
        ready=cni.input_after,
        wanted=cni.wanted,
    )


# --- rules shared by the verbs --------------------------------------------------------------------


def _locate(cni: CniConfig, net: NetworkConfigList, *, verb: str) -> list[_Step]:
    """Every plugin of ``net`` found on disk, or the first lookup error: nothing runs unless all exist."""
    if not net.plugins:
        raise NotExecutedError(ErrorCode.INVALID_NETWORK_CONFIG, f'network "{net.name}" has no plugins')
    steps: list[_Step] = []
    for plugin in net.plugins:
        step_type = conf.plugin_type(plugin)
        try:
            plugin_path = cni.exec.find_in_path(step_type, cni.path, root=cni.chroot_dir)
            steps.append(_Step(plugin=plugin, plugin_path=plugin_path))
        except CniError as err:
            raise err.with_context(_describe_type(step_type, net, verb)) from err
    return steps


def _check_attachment(net: NetworkConfigList, rt: RuntimeConf) -> None:
    names.check_container_id(rt.container_id)
    names.check_network_name(net.name)
    names.check_ifname(rt.ifname)


def prev_result_for_del(net: NetworkConfigList, prev_result: JsonObject | None) -> JsonObject | None:
    """The ``prevResult`` a DEL of ``net`` gives its plugins: ``prev_result`` in the list's version,
    validated; None before 0.4.0. A malformed one raises CniError naming the network."""
    if prev_result is None or not results.version_at_least(net.cni_version, DEL_PREV_RESULT_SINCE):
        return None
    return _converted(prev_result, net, what="prevResult")


def _converted(result: JsonObject, net: NetworkConfigList, *, what: str) -> JsonObject:
    try:
        return results.convert(result, net.cni_version)
    except CniError as err:
        raise err.with_context(f'network "{net.name}": {what}') from err


def _describe(step: _Step, net: NetworkConfigList, verb: str) -> str:
    return _describe_type(step.type, net, verb)


def _describe_type(plugin_type: str, net: NetworkConfigList, verb: str) -> str:
    return f'plugin type="{plugin_type}" name="{net.name}" failed ({verb})'

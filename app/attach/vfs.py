"""Host devices moved into sandboxes (SR-IOV VFs): what they were before, and getting them back.

When a delegate's configuration names a PCI device (``deviceID`` or ``pciBusID``, injected from a
NAD's ``resourceName`` or written in the NAD), or a plugin declaring the ``deviceID`` capability is
handed one in its runtimeConfig (a selection's ``deviceID``: host-device takes it as its
``pciBusID``, in place of one its configuration names, but takes a netdev its configuration names by
``device``, ``hwaddr`` or ``kernelpath`` before any PCI device, unless that PCI device is bound to a
user-space driver: in DPDK mode it hands the pod that device and moves no netdev), the engine
records, before the delegate runs, the netdev name and MAC that device has in the host namespace,
learnt once the commit of the intents proved no other sandbox records the device (so no other
sandbox's DEL is still moving or renaming it). A teardown then removes the attachment only once the
device is back: found in the host under its PCI address, renamed and re-addressed if it came back as
something else (the kernel returns a VF from a vanished namespace under its in-pod name, ``net1`` or
``devN``). A VF back in the host is released even when its name cannot be restored (another netdev
has it), its MAC was never known, or the VF refuses it (an iavf VF whose PF pins its MAC: it is
renamed all the same): that is warned about, never retried, as no retry could change it. A VF still
missing while its netdev driver is bound keeps the attachment pending (invariant 5); a VF no longer
on the PCI bus at all (its PF's VFs destroyed) took its netdev with it, so it does not (invariant
5b: that DEL could never finish), nor does a VF now bound to no driver (unbinding its netdev driver
destroyed the netdev, wherever it was) or to a user-space driver. A VF still missing is first
looked for in its sandbox's namespace (the recorded one, identity-checked): a kill -9 between the
reference host-device's two steps (ADD: move in, then rename to ``CNI_IFNAME``; DEL: rename back,
then move out) leaves it there under its host name, which no DEL moves. A link there that is
provably the VF (its parent device is that PCI address; or, with no parent reported, it has the
VF's recorded host name and MAC: ``is_the_device``) is moved back to the host under its name, as
that DEL would have; no other link is touched.

A VF bound to a user-space (DPDK) driver (``vfio-pci``, ``uio_pci_generic``, ``igb_uio``: how
sriov-cni tells a DPDK device) has no netdev in any namespace: handed over so, it is recorded with
its PCI address only and there is nothing to get back; rebound so while its DEL waits for its
netdev, that netdev was destroyed with the unbind, wherever it was, so the DEL waits no more.

The PCI-address-to-netdev lookup reads ``<sysfsRoot>/bus/pci/devices/<pci>/net/`` (and the
device's ``driver`` link), the address in lower case as sysfs names it (one named in upper-case
hex is the same device, as invariant 8b compares them): ``/sys`` in production; tests point
``sysfsRoot`` at a fake tree whose VF netdevs are veths. Everything else (link lookup, rename,
MAC) is real netlink through ``app.attach.netns``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from app.attach import netns
from app.attach.errors import MultusCode
from app.cni import conf as cniconf
from app.cni.types import CniError, JsonObject, NetworkConfigList

log = logging.getLogger(__name__)

PCI_ADDRESS = re.compile(
    r"(?:[0-9a-fA-F]{4}|[1-9a-fA-F][0-9a-fA-F]{4,7}):[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
)
"""A PCI address in full (``fullmatch``: no trailing newline), its hex in either case, as the kernel
names devices in sysfs (``%04x:%02x:%02x.%d``): a domain of four hex digits, or up to eight without
a leading zero when it needs more (a VMD domain: ``10000:00:02.0``)."""
USERSPACE_DRIVERS = frozenset({"vfio-pci", "uio_pci_generic", "igb_uio"})
"""PCI drivers handing a device to user space (DPDK), as sriov-cni lists them: no netdev exists."""
HOST_DEVICE = "host-device"
"""The reference plugin's type: it picks its device in its own order (``_host_device_pci``)."""
HOST_DEVICE_NETDEV_FIELDS = ("device", "hwaddr", "kernelpath")
"""host-device's fields naming a netdev, each taken before its PCI device (``pciBusID``), unless
that device is bound to a user-space driver (its DPDK mode)."""
BoundToUserspace = Callable[[str], bool]
"""Whether a PCI address is bound to a user-space (DPDK) driver (``HostDevices.userspace_probe``)."""


def pci_address(
    net: NetworkConfigList,
    capability_args: Mapping[str, Any] | None = None,
    userspace: BoundToUserspace | None = None,
) -> str | None:
    """The PCI device a delegate configuration names (``deviceID``/``pciBusID``), else the
    runtimeConfig ``deviceID`` a plugin of it declaring that capability is handed; None if none
    (``pci_addresses``)."""
    named = pci_addresses(net, capability_args, userspace)
    return named[0][1] if named else None


def pci_addresses(
    net: NetworkConfigList,
    capability_args: Mapping[str, Any] | None = None,
    userspace: BoundToUserspace | None = None,
) -> list[tuple[str, str]]:
    """Every PCI address a delegate is handed and takes, with the field handing it, plugin by
    plugin, each address once: a plugin's ``deviceID`` (sriov-cni's, which it takes whether the VF
    has a netdev or is bound to a user-space driver), then its ``pciBusID``, or instead the
    ``runtimeConfig.deviceID`` it is handed when it declares that capability: that one overrides its
    ``pciBusID`` (a NAD's ``pciBusID`` may be a default a selection's ``deviceID`` replaces; the
    device it names is then not the one taken). host-device follows its own order
    (``_host_device_pci``), asking ``userspace`` whether its PCI device is bound to a user-space
    driver only when it also names a netdev (without ``userspace``, as for a record read back
    without its host, such a device is taken to be bound to a netdev driver)."""
    handed = (capability_args or {}).get("deviceID")
    named: dict[str, str] = {}
    for plugin in net.plugins:
        capabilities = plugin.get("capabilities")
        declared = isinstance(capabilities, Mapping) and capabilities.get("deviceID") is True
        if plugin.get("type") == HOST_DEVICE:
            taken = _host_device_pci(plugin, _runtime_device_id(plugin, capability_args), userspace)
            if taken is not None:
                named.setdefault(taken[1], taken[0])
            continue
        value = plugin.get("deviceID")
        if isinstance(value, str) and PCI_ADDRESS.fullmatch(value):
            named.setdefault(value, "deviceID")
        if declared and isinstance(handed, str) and PCI_ADDRESS.fullmatch(handed):
            named.setdefault(handed, "runtimeConfig.deviceID")
            continue
        value = plugin.get("pciBusID")
        if isinstance(value, str) and PCI_ADDRESS.fullmatch(value):
            named.setdefault(value, "pciBusID")
    return [(field, address) for address, field in named.items()]


def _runtime_device_id(plugin: JsonObject, capability_args: Mapping[str, Any] | None) -> object:
    """The ``runtimeConfig.deviceID`` ``plugin`` reads on its stdin (``app.cni.conf.plugin_stdin``,
    as libcni builds it): the runtime's when it declares that capability, the ``runtimeConfig`` of
    its own configuration instead when no capability it declares is supplied (libcni keeps it then)."""
    granted = cniconf.runtime_config(plugin, capability_args or {})
    read = granted if granted else plugin.get("runtimeConfig")
    return read.get("deviceID") if isinstance(read, Mapping) else None


def _host_device_pci(
    plugin: Mapping[str, Any], handed: object, userspace: BoundToUserspace | None
) -> tuple[str, str] | None:
    """(field, address) of the PCI device the reference host-device plugin takes, None if none.

    Its own order (its ``loadConf`` and ``cmdAdd``): a ``runtimeConfig.deviceID`` it is ``handed``
    (the one it reads: ``_runtime_device_id``) replaces its ``pciBusID`` (an auxiliary device's name
    too: then no PCI device is named at all); its configuration's ``deviceID`` it never reads. A PCI
    device bound to a user-space driver puts it in DPDK mode: it hands the pod that device and moves
    no netdev, whatever else its configuration names. Otherwise it takes the netdev its ``device``,
    ``hwaddr`` or ``kernelpath`` names, each before the PCI device's: with one of them set, the PCI
    device is not the one taken. ``userspace`` is asked only then (a device it cannot be asked about
    counts as a netdev's)."""
    address: object = handed
    field = "runtimeConfig.deviceID"
    if not (isinstance(handed, str) and handed):
        field, address = "pciBusID", plugin.get("pciBusID")
    if not (isinstance(address, str) and PCI_ADDRESS.fullmatch(address)):
        return None
    if any(isinstance(plugin.get(name), str) and plugin[name] for name in HOST_DEVICE_NETDEV_FIELDS):
        return (field, address) if userspace is not None and userspace(address) else None
    return field, address


def unknown_device(
    net: NetworkConfigList,
    capability_args: Mapping[str, Any] | None = None,
    userspace: BoundToUserspace | None = None,
) -> dict[str, str] | None:
    """{pci, ifname: "", mac: ""}: the host device ``net`` (run with ``capability_args``) will take,
    as recorded with the intents, whose commit proves no other sandbox records it (invariant 8b).
    Its name and MAC are learnt by ``HostDevices.snapshot`` only after that commit: until then
    another sandbox's DEL may still be moving it. None if ``net`` takes no device."""
    pci = pci_address(net, capability_args, userspace)
    return None if pci is None else {"pci": pci, "ifname": "", "mac": ""}


class HostDevices:
    def __init__(self, sysfs_root: Path = Path("/sys")) -> None:
        self._sysfs = sysfs_root

    def _device_dir(self, pci: str) -> Path:
        return self._sysfs / "bus" / "pci" / "devices" / pci.lower()  # sysfs names them in lower case

    def netdev_names(self, pci: str) -> list[str]:
        """Netdevs of PCI device ``pci`` present in the host namespace (sysfs lists only those).

        Each is a directory there (read from the directory entry: no further system call); an entry
        that is none is no netdev in the host: a fake tree's link to where the kernel lists a veth
        standing in for a VF (``/sys/class/net/<name>``), which leads nowhere while it is elsewhere."""
        try:
            with os.scandir(self._device_dir(pci) / "net") as entries:
                return sorted(entry.name for entry in entries if entry.is_dir())
        except FileNotFoundError:
            return []

    def bound_driver(self, pci: str) -> str | None:
        """The driver PCI device ``pci`` is bound to; None when it is bound to none (or is no device)."""
        try:
            return os.path.basename(os.readlink(self._device_dir(pci) / "driver"))
        except FileNotFoundError:
            return None

    def userspace_driver(self, pci: str) -> str | None:
        """The user-space (DPDK) driver PCI device ``pci`` is bound to, if it is bound to one."""
        driver = self.bound_driver(pci)
        return driver if driver in USERSPACE_DRIVERS else None

    def userspace_probe(self) -> BoundToUserspace:
        """Whether a PCI address is bound to a user-space driver, each address read once: one
        operation's view (its claims, intents and snapshot agree even if the device is rebound
        meanwhile). Reads nothing until asked (``pci_addresses`` asks only for a host-device
        naming both a netdev and a PCI device)."""

        @cache
        def bound_to_userspace(pci: str) -> bool:
            return self.userspace_driver(pci) is not None

        return bound_to_userspace

    def _why_no_netdev_anywhere(self, pci: str) -> str | None:
        """Why PCI device ``pci``, which has no netdev in the host namespace, has none in any other
        namespace either; None when a netdev driver is bound to it (its netdev is in a sandbox)."""
        if not self._device_dir(pci).exists():
            return "no longer exists on the PCI bus"  # its PF's VFs were destroyed, netdevs with them
        driver = self.bound_driver(pci)
        if driver is None:
            return "is bound to no driver"  # the unbind of its netdev driver destroyed its netdev
        if driver in USERSPACE_DRIVERS:
            return f"is now bound to {driver}"  # and was unbound from its netdev driver before
        return None

    async def snapshot(
        self,
        net: NetworkConfigList,
        capability_args: Mapping[str, Any] | None = None,
        userspace: BoundToUserspace | None = None,
    ) -> dict[str, str] | None:
        """{pci, ifname, mac} of the host device ``net`` (run with ``capability_args``, the drivers
        seen through ``userspace``, else read now) will take, as it is now; None if none. Meant once
        no other sandbox records the device: before, it may be in passing (in another pod, or back
        under its in-pod name before its DEL renames it)."""
        pci = pci_address(net, capability_args, userspace or self.userspace_probe())
        if pci is None:
            return None
        names = self.netdev_names(pci)
        if not names:
            driver = self.userspace_driver(pci)
            if driver is not None:
                log.debug("device %s is bound to %s (DPDK): it has no netdev", pci, driver)
            else:
                log.warning("device %s has no netdev in the host namespace before ADD", pci)
            return {"pci": pci, "ifname": "", "mac": ""}
        link = await netns.host_link(names[0])
        return {"pci": pci, "ifname": names[0], "mac": link.mac if link is not None else ""}

    async def ensure_returned(
        self, device: Mapping[str, str], *, netns_path: str = "", netns_identity: str = ""
    ) -> bool:
        """Raise unless the device is back in the host, or can have no netdev left anywhere (gone
        from the PCI bus, bound to no driver or to a user-space one); True when it had to be
        restored: taken back from its sandbox's namespace (``netns_path``, while it holds the
        recorded ``netns_identity``: ``take_back``), or come back under another name or MAC
        (restored as far as can be: a name another netdev has, or a MAC never known, is not)."""
        pci, name, mac = device.get("pci", ""), device.get("ifname", ""), device.get("mac", "")
        if not name:
            return False  # nothing was known about it before the ADD: nothing to prove
        current = self.netdev_names(pci)
        taken_back = False
        if not current and netns_path and self._why_no_netdev_anywhere(pci) is None:
            taken_back = await self.take_back(device, netns_path=netns_path, netns_identity=netns_identity)
            current = self.netdev_names(pci) if taken_back else []
        if not current:
            gone = self._why_no_netdev_anywhere(pci)
            if gone is not None:
                log.warning("device %s (%s) %s: it has no netdev to get back", pci, name, gone)
                return False
            raise CniError(
                MultusCode.DEVICE_NOT_RETURNED,
                f"device {pci} ({name}) is not back in the host namespace",
                "it is still inside a network namespace; the attachment stays pending",
            )
        returned = current[0]
        link = await netns.host_link(returned)
        if returned == name and (link is None or not mac or link.mac.lower() == mac.lower()):
            return taken_back
        # Back in the host, the VF is released whatever its name: what cannot be restored is warned
        # about, not raised: no retry could change it, so the DEL would fail for ever (invariant 5b).
        unrestored: list[str] = []
        if returned != name and await netns.host_link(name) is not None:
            unrestored.append(f"its name {name} (another netdev has it)")
            name = returned
        if not mac and link is not None:
            unrestored.append("its MAC (never known)")
            mac = link.mac
        if unrestored:
            log.warning(
                "device %s came back as %s: cannot restore %s; released as it is",
                pci,
                returned,
                " nor ".join(unrestored),
            )
        if name != returned or link is None or link.mac.lower() != mac.lower():
            try:
                await netns.restore_host_link(returned, name=name, mac=mac)
            except netns.MacRefusedError as exc:
                # a PF pinning its VF's MAC refuses it for good: the VF is released under its name
                log.warning(
                    "device %s came back as %s: renamed to %s, but cannot restore its MAC: %s; "
                    "released as it is",
                    pci,
                    returned,
                    name,
                    exc.strerror,
                )
                return True
            log.info("device %s came back as %s: restored to %s %s", pci, returned, name, mac)
        return True

    async def take_back(self, device: Mapping[str, str], *, netns_path: str, netns_identity: str) -> bool:
        """Move the recorded host ``device`` back to the host under its recorded name, when it is
        still inside its sandbox's namespace (``netns_path``, while it holds ``netns_identity``) as
        no delegate's DEL can move it: a kill -9 between host-device's two steps leaves it there
        under its host name (its ADD moves the device in, then renames it to ``CNI_IFNAME``; its DEL
        renames it back, then moves it out), and host-device then fails for want of ``net1`` for
        ever. What it does is what that DEL would have done; its MAC is left to ``ensure_returned``.
        Only a link that is provably the device is moved (``is_the_device``). True if it was moved;
        False when it is not there, or the namespace cannot be looked into (nothing proves then)."""
        pci, name = device.get("pci", ""), device.get("ifname", "")
        try:
            was = await netns.move_home(
                netns_path,
                identity=netns_identity,
                wanted=lambda link: is_the_device(link, device),
                name=name,
            )
        except Exception as exc:  # gone, unreadable, refused (netlink's own errors are no OSError)
            log.warning("device %s (%s) cannot be taken back from %s: %s", pci, name, netns_path, exc)
            return False
        if not was:
            return False
        log.warning(
            "device %s was still in %s as %s after its DEL: moved back to the host as %s",
            pci,
            netns_path,
            was,
            name,
        )
        return True


def is_the_device(link: netns.SandboxLink, device: Mapping[str, str]) -> bool:
    """Whether ``link`` in a sandbox's namespace is provably the recorded host ``device``: its
    parent is that PCI device (the kernel says so from Linux 5.14 on); or, for a link with no
    parent reported (an older kernel's VF; a veth standing in for one), it has the device's recorded
    host name and its recorded MAC, both known (host-device keeps the MAC; a link of another
    parent is never taken, whatever its name)."""
    if link.parent or link.parent_bus:
        return link.parent_bus == "pci" and link.parent.lower() == device.get("pci", "").lower()
    name, mac = device.get("ifname", ""), device.get("mac", "")
    return bool(name and mac) and link.name == name and link.mac.lower() == mac.lower()


def stranded_in(links: list[netns.SandboxLink], device: Mapping[str, str], ifname: str) -> bool:
    """Whether the recorded host ``device`` is among a sandbox's ``links`` under another name than
    the attachment's ``ifname`` (which a delegate's DEL looks for): left there under its host name
    (or any name, when its parent device proves it)."""
    return any(link.name != ifname and is_the_device(link, device) for link in links)

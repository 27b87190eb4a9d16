"""The plugin manager: entry points loaded one at a time, a registry of named factories per kind.

Built-in plugins come through the same entry-point group (``genrec_bench``) as third-party ones.
Environment switches: ``GENREC_BENCH_STRICT_PLUGINS=1`` makes a broken plugin fatal;
``GENREC_BENCH_LOAD_PLUGINS=a,b`` loads only the named entry points.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

log = logging.getLogger("genrec_bench")

KINDS = ("datasets", "features", "tokenizers", "generators", "retrievers", "metrics")
ENTRY_POINT_GROUP = "genrec_bench"


@dataclass
class PluginInfo:
    name: str
    version: str
    registered: dict[str, list[str]] = field(default_factory=dict)  # kind -> names
    error: str | None = None


class Registry:
    """Named factories per kind, with the plugin that registered each."""

    def __init__(self) -> None:
        self.factories: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}
        self.owners: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        self.plugins: dict[str, PluginInfo] = {}

    def get(self, kind: str, name: str, where: str = "") -> Callable[..., Any]:
        try:
            return self.factories[kind][name]
        except KeyError:
            known = ", ".join(sorted(self.factories[kind])) or "none"
            prefix = f"{where}: " if where else ""
            raise PluginError(
                f"{prefix}unknown {kind[:-1]} '{name}'; known: {known} "
                "(install the plugin that provides it, or list it under 'plugins:')"
            ) from None

    def version_of(self, kind: str, name: str) -> str:
        owner = self.owners[kind].get(name, "")
        info = self.plugins.get(owner)
        return f"{owner}=={info.version}" if info else owner


class _State:
    manager: pluggy.PluginManager | None = None
    registry: Registry | None = None
    infos: dict[str, PluginInfo] = {}


def _strict(strict: bool | None) -> bool:
    if strict is not None:
        return strict
    return os.environ.get("GENREC_BENCH_STRICT_PLUGINS", "") not in ("", "0", "false")


def _report(name: str, exc: BaseException, strict: bool) -> str:
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    if strict:
        raise PluginError(
            f"plugin '{name}' failed to load ({reason}); fix or uninstall it, "
            "or unset GENREC_BENCH_STRICT_PLUGINS to skip it"
        ) from exc
    log.warning("skipped plugin '%s': %s", name, reason)
    return reason


def plugin_manager(strict: bool | None = None) -> pluggy.PluginManager:
    """The process-wide manager, loading entry points on first use."""
    if _State.manager is not None:
        return _State.manager
    strict = _strict(strict)
    pm = pluggy.PluginManager("genrec_bench")
    pm.add_hookspecs(hookspecs)
    only = {n.strip() for n in os.environ.get("GENREC_BENCH_LOAD_PLUGINS", "").split(",") if n.strip()}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if only and ep.name not in only:
            continue
        dist = getattr(ep, "dist", None)
        version = getattr(dist, "version", "") or ""
        info = PluginInfo(ep.name, version)
        _State.infos[ep.name] = info
        if pm.has_plugin(ep.name):
            info.error = _report(ep.name, PluginError("another plugin already uses this entry-point name"), strict)
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not take the tool down
            info.error = _report(ep.name, exc, strict)
    _State.manager = pm
    return pm


def register_plugin(plugin: object, name: str, version: str = "") -> None:
    """Register a plugin object or module (tests, module paths in YAML); the registry is rebuilt on next use."""
    pm = plugin_manager()
    if pm.has_plugin(name):
        raise PluginError(f"a plugin named '{name}' is already registered")
    pm.register(plugin, name=name)
    _State.infos[name] = PluginInfo(name, version)
    _State.registry = None


def unregister_plugin(name: str) -> None:
    pm = plugin_manager()
    if pm.has_plugin(name):
        pm.unregister(name=name)
    _State.infos.pop(name, None)
    _State.registry = None


def load_module_plugins(modules: list[str], where: str = "plugins") -> None:
    """Import and register plugins named by module path (``plugins: [my_pkg.my_plugin]`` in YAML)."""
    for module_name in modules:
        if plugin_manager().has_plugin(module_name):
            continue
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginError(
                f"{where}: cannot import plugin module '{module_name}' ({type(exc).__name__}: {exc}); "
                "check the module path and that its package is installed"
            ) from None
        register_plugin(module, module_name, getattr(module, "__version__", ""))


def registry(strict: bool | None = None) -> Registry:
    """Call every ``register_*`` hook once and collect the factories; a name registered twice is an error."""
    if _State.registry is not None:
        return _State.registry
    strict = _strict(strict)
    pm = plugin_manager(strict)
    reg = Registry()
    for name in _State.infos:
        reg.plugins[name] = _State.infos[name]
        _State.infos[name].registered = {}
    for kind in KINDS:
        hook = getattr(pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():  # registration order: built-ins and entry points first
            owner = impl.plugin_name
            info = reg.plugins.setdefault(owner, PluginInfo(owner, ""))

            def register(name: str, factory: Callable[..., Any], _kind=kind, _owner=owner, _info=info) -> None:
                if name in reg.factories[_kind]:  # never silently run another plugin's object under a name
                    other = reg.owners[_kind][name]
                    raise PluginError(
                        f"plugin '{_owner}' registers {_kind[:-1]} '{name}', which is already "
                        f"registered by plugin '{other}'; rename it in '{_owner}' (or uninstall one "
                        "of the two)"
                    )
                reg.factories[_kind][name] = factory
                reg.owners[_kind][name] = _owner
                _info.registered.setdefault(_kind, []).append(name)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                info.error = _report(owner, exc, strict)
    _State.registry = reg
    return reg


def reset() -> None:
    """Forget the manager and registry (tests)."""
    _State.manager = None
    _State.registry = None
    _State.infos = {}

"""The plugin manager: fixture-registered plugins, broken entry points, duplicates, module paths."""

import importlib.metadata
import sys
import types

import pytest

from genrec_bench import hookimpl, plugins
from genrec_bench.errors import PluginError
from genrec_bench.interfaces import Generator


class Constant(Generator):
    def __init__(self, value: float = 1.0):
        self.value = value

    def fit(self, data, tokenizer, validate, ctx):
        pass

    def generate(self, batch, ctx):
        raise NotImplementedError


class FixturePlugin:
    @staticmethod
    @hookimpl
    def register_generators(register):
        register("constant", Constant)


@pytest.fixture
def fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


def test_fixture_plugin_is_registered_and_listed(fresh_plugins):
    plugins.register_plugin(FixturePlugin, "fixture")
    reg = plugins.registry()
    assert reg.get("generators", "constant") is Constant
    assert reg.plugins["fixture"].registered == {"generators": ["constant"]}
    plugins.unregister_plugin("fixture")
    with pytest.raises(PluginError, match="unknown generator 'constant'"):
        plugins.registry().get("generators", "constant")


def test_builtins_come_through_entry_points(fresh_plugins):
    reg = plugins.registry()
    assert {"popularity", "sasrec", "random"} <= set(reg.factories["generators"])
    assert reg.owners["generators"]["sasrec"] == "sasrec"
    assert reg.plugins["sasrec"].version == importlib.metadata.version("genrec-bench")  # the distribution's


def test_duplicate_name_is_an_error_naming_both_plugins(fresh_plugins):
    class Duplicate:
        @staticmethod
        @hookimpl
        def register_generators(register):
            register("popularity", Constant)

    plugins.register_plugin(Duplicate, "dup")
    with pytest.raises(
        PluginError,
        match="plugin 'dup' registers generator 'popularity', which is already registered by plugin 'baselines'",
    ):
        plugins.registry()


def _fake_entry_points(monkeypatch, broken_module: str):
    real = importlib.metadata.entry_points

    def entry_points(group=None, **kw):
        eps = list(real(group=group, **kw))
        if group == plugins.ENTRY_POINT_GROUP:
            eps.append(importlib.metadata.EntryPoint("broken", broken_module, group))
        return eps

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_broken_plugin_is_skipped_with_one_line(fresh_plugins, monkeypatch, caplog):
    _fake_entry_points(monkeypatch, "genrec_bench_no_such_module")
    reg = plugins.registry()
    assert "sasrec" in reg.factories["generators"]
    assert reg.plugins["broken"].error.startswith("ModuleNotFoundError")
    assert "skipped plugin 'broken'" in caplog.text


def test_strict_switch_makes_a_broken_plugin_fatal(fresh_plugins, monkeypatch):
    _fake_entry_points(monkeypatch, "genrec_bench_no_such_module")
    monkeypatch.setenv("GENREC_BENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin 'broken' failed to load"):
        plugins.registry()


def test_plugin_raising_in_its_hook_is_skipped(fresh_plugins, caplog):
    class Raising:
        @staticmethod
        @hookimpl
        def register_tokenizers(register):
            raise RuntimeError("boom")

    plugins.register_plugin(Raising, "raising")
    reg = plugins.registry()
    assert reg.plugins["raising"].error == "RuntimeError: boom"
    assert "atomic" in reg.factories["tokenizers"]


def test_module_path_plugins(fresh_plugins, monkeypatch):
    module = types.ModuleType("my_quick_plugin")
    module.register_generators = FixturePlugin.register_generators
    monkeypatch.setitem(sys.modules, "my_quick_plugin", module)
    plugins.load_module_plugins(["my_quick_plugin"])
    assert plugins.registry().get("generators", "constant") is Constant
    with pytest.raises(PluginError, match="cannot import plugin module 'no_such_pkg.plugin'"):
        plugins.load_module_plugins(["no_such_pkg.plugin"])

"""Every public name of minidiff has a docstring (issue 23, point 7): help() is never empty.

The walk: every name each public module exports (its __all__, else its names without a leading
underscore) that minidiff defines, and every public method and property of those classes,
inherited ones included (Module.eval under Linear too). A class or function needs its own
docstring; a method may take its base class's, as help() shows it (inspect.getdoc).
On 71d2250: help(unet_from_preset), help(Module.eval), help(Tensor.sum) and 60 more were empty.
"""
import importlib
import inspect
import pydoc
import types

import pytest

PUBLIC_MODULES = ("minidiff", "minidiff.nn", "minidiff.optim", "minidiff.optim.lr_scheduler",
                  "minidiff.diffusion", "minidiff.models", "minidiff.data", "minidiff.testing",
                  "minidiff.pretrained", "minidiff.functional")


def ours(obj):
    """Whether minidiff defines `obj` (re-exports of NumPy or the standard library are not)."""
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", "")
    return isinstance(name, str) and name.split(".")[0] == "minidiff"


def exported(module):
    """(qualified name, object) for each public name of `module` that minidiff defines."""
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name)
        if ours(obj):
            yield f"{module.__name__}.{name}", obj


def members(cls):
    """(qualified name, attribute) for each public method or property of `cls` that a class of
    minidiff defines, looked up on `cls` as help(cls.name) does."""
    for name in dir(cls):
        owner = next((c for c in cls.__mro__ if name in vars(c)), None)
        if name.startswith("_") or owner is None or not ours(owner):
            continue
        raw = vars(owner)[name]
        if callable(raw) or isinstance(raw, (property, classmethod, staticmethod)):
            yield f"{cls.__module__}.{cls.__qualname__}.{name}", getattr(cls, name)


def undocumented(module_name):
    module = importlib.import_module(module_name)
    empty = [] if (module.__doc__ or "").strip() else [module_name]
    for name, obj in exported(module):
        if not (obj.__doc__ or "").strip():             # its own: a class's is not inherited
            empty.append(name)
        if inspect.isclass(obj):
            empty += [n for n, m in members(obj) if not (inspect.getdoc(m) or "").strip()]
    return empty


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(module_name):
    assert undocumented(module_name) == []


def test_the_walk_sees_inherited_methods_and_properties():
    """The walk is not vacuous: it reaches Module.eval through Linear, and Tensor.shape."""
    from minidiff.nn import Linear
    from minidiff.tensor import Tensor
    assert "minidiff.nn.layers.Linear.eval" in dict(members(Linear))
    assert {"minidiff.tensor.Tensor.shape", "minidiff.tensor.Tensor.sum"} <= set(
        dict(members(Tensor)))


def test_the_walk_flags_an_empty_docstring(monkeypatch):
    import minidiff.models
    monkeypatch.setattr(minidiff.models.unet_from_preset, "__doc__", None)
    assert undocumented("minidiff.models") == ["minidiff.models.unet_from_preset"]


def named(path):
    """The object at "module:attr.attr" (pydoc.locate cannot tell minidiff.tensor the function
    from minidiff.tensor the module)."""
    module, _, attrs = path.partition(":")
    obj = importlib.import_module(module)
    for a in attrs.split("."):
        obj = getattr(obj, a)
    return obj


@pytest.mark.parametrize("path, words", [
    ("minidiff.models:unet_from_preset", ("tiny", "small", "cifar10")),
    ("minidiff.nn:Module.eval", ("train(False)",)),
    ("minidiff.tensor:Tensor.sum", ("axis",)),
    ("minidiff.nn:Linear.forward", ("out_features",)),
])
def test_help_shows_the_docstring(path, words):
    """help(x) prints pydoc.render_doc(x): it carries the docstring's words (base: only the
    signature for unet_from_preset, Module.eval and Tensor.sum)."""
    obj = named(path)
    text = pydoc.render_doc(obj, renderer=pydoc.plaintext)
    doc = inspect.getdoc(obj)
    assert doc and doc.splitlines()[0] in text
    assert all(w in doc for w in words)

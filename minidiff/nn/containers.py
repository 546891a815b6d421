"""ModuleList and Sequential: numbered rows of modules.

A row keeps its modules as the attributes "0", "1", ... of itself, so the one naming rule of
Module (a parameter's name is the path of attributes that leads to it) gives PyTorch's names:
Sequential(Linear(2, 4), SiLU(), Linear(4, 2)) has "0.weight", "0.bias", "2.weight", "2.bias",
and held as `self.body` in a model, "body.0.weight", ...
"""
import numbers

from .module import Module


class ModuleList(Module):
    """A numbered row of modules: index it, iterate it, append to it. It has no forward; the
    module that holds it decides how its modules are called."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def _row(self):
        """The modules in index order (attributes keep the order they were first set in)."""
        return [m for name, m in vars(self).items() if name.isdigit()]

    def _checked(self, module, i):
        if not isinstance(module, Module):
            raise ValueError(f"{type(self).__name__}: argument {i} is a "
                             f"{type(module).__name__}, not a Module")
        return module

    def append(self, module):
        """Add `module` at the end, as entry len(self); returns self."""
        n = len(self)
        setattr(self, str(n), self._checked(module, n))
        return self

    def extend(self, modules):
        """Append each module of the iterable `modules`; returns self."""
        for m in modules:
            self.append(m)
        return self

    def _index(self, i):
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not -n <= i < n:
            raise IndexError(f"{type(self).__name__}: index {i!r} is out of range for "
                             f"{n} modules")
        return int(i) % n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._like(self._row()[i])
        return self._row()[self._index(i)]

    def __setitem__(self, i, module):
        i = self._index(i)
        setattr(self, str(i), self._checked(module, i))     # keeps its place in the order

    def __len__(self):
        return len(self._row())

    def __iter__(self):
        return iter(self._row())

    def _like(self, modules):
        return ModuleList(modules)


class Sequential(ModuleList):
    """Modules applied one after another: Sequential(a, b, c)(x) = c(b(a(x)))."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        """Each module applied to the previous one's output: c(b(a(x)))."""
        for layer in self:
            x = layer(x)
        return x

    def _like(self, modules):
        return Sequential(*modules)

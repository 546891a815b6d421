"""What SGD, Adam and AdamW share: param groups, skipping frozen parameters, checkpoints.

As in PyTorch, `opt.param_groups` is a list of dicts, each with "params" (a list of Tensors)
and every hyperparameter ("lr", ...). step() reads them each time, so a change made by hand
(`opt.param_groups[0]["lr"] = 1e-4`) or by a scheduler (lr_scheduler.py) is the next step's.
A parameter with requires_grad=False, or whose .grad is None, is kept and skipped.
"""
import numpy as np

from .. import backend
from ..nn import Module, checked_array
from ..tensor import Tensor
from ..validate import check_bool, check_int, check_number


def refuse_one_tensor(params, op):
    """A Tensor iterates over its rows, so list(t) would hand over copies of rows."""
    if isinstance(params, Tensor):
        raise TypeError(f"{op}: pass a list of tensors such as [t], not a single Tensor")


def _given_groups(params, op):
    """The constructor's `params`: Tensors (one group) or dicts (PyTorch's param groups)."""
    if isinstance(params, Module):
        raise ValueError(f"{op}: pass module.parameters(), not the module itself")
    refuse_one_tensor(params, op)
    params = list(params)
    if not params:
        raise ValueError(f"{op}: got an empty parameter list")
    if all(isinstance(p, dict) for p in params):
        return params
    return [{"params": params}]


class Optimizer:
    """The parameters, their param groups, per-parameter buffers and checkpoints.

    `params[i]` is every group's parameters in order; `steps[i]` counts the updates parameter
    i has had; `buffers[name][i]` holds the arrays an optimizer keeps between steps (Adam's m
    and v), made as zeros the first time they are needed.

    Subclasses give `_checked(group, where)` (the group's hyperparameters, checked),
    `_saved(h)` (them as a state_dict holds them), `_buffers_for(h)` and `_update`.
    """

    buffer_names = ()
    required = ()                   # the hyperparameters every state_dict holds
    absent_means = {}               # the others: what a state without them had

    def __init__(self, params, defaults):
        kind = type(self).__name__
        self.defaults = self._checked(defaults, f"{kind}: ")
        self.param_groups, self.params, self.steps = [], [], []
        self.buffers = {name: [] for name in self.buffer_names}
        self._slot = {}                                        # id(p) -> i
        for group in _given_groups(params, kind):
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a dict {"params": tensors, hyperparameter: value, ...}; the hyperparameters it
        leaves out are the constructor's (`defaults`)."""
        kind, n, is_dict = type(self).__name__, len(self.param_groups), isinstance(group, dict)
        named = n or (is_dict and len(group) > 1)          # not a plain list of parameters
        where = f"{kind}: param_groups[{n}]: " if named else f"{kind}: "
        if not is_dict or "params" not in group:
            raise ValueError(f"{where}a param group is a dict with 'params', got {group!r:.60}")
        unknown = [k for k in group if k != "params" and k not in self.defaults]
        if unknown:
            raise ValueError(f"{where}unknown key {unknown[0]!r}; allowed: params, "
                             + ", ".join(self.defaults))
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise ValueError(f"{where}parameter {i} is {p!r:.60}; need Tensors "
                                 "(e.g. module.parameters())")
        if not params:
            raise ValueError(f"{where}got an empty parameter list")
        if len({id(p) for p in params} | set(self._slot)) != len(params) + len(self._slot):
            raise ValueError(f"{where}the same parameter appears twice in the list")
        hyper = self._checked({**self.defaults, **group}, where)
        self.param_groups.append({"params": params, **hyper})
        for p in params:
            self._slot[id(p)] = len(self.params)
            self.params.append(p)
            self.steps.append(0)
            for name in self.buffer_names:
                self.buffers[name].append(None)

    # ------------------------------------------------------------------ the step
    def zero_grad(self, set_to_none=True):
        """Forget the gradients (PyTorch's default, set_to_none=True), or with False fill them
        with zeros in place (each parameter's .grad is its own: see Tensor.accum_grad)."""
        check_bool(f"{type(self).__name__}.zero_grad: set_to_none", set_to_none)
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.zero_()

    def step(self):
        """One update of every parameter that requires grad and has a .grad, with each
        group's hyperparameters as they are now."""
        todo = []                                          # (i, p, h): all checked first
        for gi, group in enumerate(self.param_groups):
            where = f"{type(self).__name__}.step: param_groups[{gi}]: "
            h = self._checked(group, where)
            for p in group["params"]:
                i = self._slot.get(id(p))
                if i is None:
                    raise ValueError(f"{where}holds a tensor this optimizer was not given; "
                                     "add it with add_param_group")
                if p.requires_grad and p.grad is not None:    # frozen or unused: skipped
                    todo.append((i, p, h))
        for i, p, _ in todo:
            if p.grad.shape != p.shape:
                raise ValueError(f"{type(self).__name__}.step: parameter {i} has shape "
                                 f"{p.shape} but its grad has shape {p.grad.shape}")
        for i, p, h in todo:
            self.steps[i] += 1
            self._update(i, p.data, p.grad.data, h)

    def _buffer(self, name, i):
        if self.buffers[name][i] is None:
            self.buffers[name][i] = backend.xp().zeros_like(self.params[i].data)
        return self.buffers[name][i]

    @property
    def lr(self):
        """The learning rate, when every param group has the same one."""
        lrs = [g["lr"] for g in self.param_groups]
        if len(set(lrs)) != 1:
            raise ValueError(f"{type(self).__name__}.lr: the param groups have different lrs "
                             f"{lrs}; read opt.param_groups[i]['lr']")
        return lrs[0]

    @lr.setter
    def lr(self, value):
        """Set every param group's learning rate."""
        value = check_number(f"{type(self).__name__}.lr", value, 0.0)
        for g in self.param_groups:
            g["lr"] = value

    def buffers_in_use(self):
        """The buffers some parameter keeps with the present hyperparameters."""
        kind = type(self).__name__
        used = {b for g in self.param_groups
                for b in self._buffers_for(self._checked(g, f"{kind}: "))}
        return tuple(b for b in self.buffer_names if b in used)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self):
        """{"kind", hyperparameters, "steps": [t_i], "<buffer>.<i>": array} with one param
        group (the format of every checkpoint); with several, "param_groups": [{"params":
        [i, ...], hyperparameters}] in place of the hyperparameters."""
        kind = type(self).__name__
        hs = [self._checked(g, f"{kind}.state_dict: ") for g in self.param_groups]
        if len(hs) == 1:
            sd = {"kind": kind, **self._saved(hs[0])}
        else:
            sd = {"kind": kind, "param_groups": [{"params": self._indices(g), **self._saved(h)}
                                                 for g, h in zip(self.param_groups, hs)]}
        sd["steps"] = list(self.steps)
        uses = {i: self._buffers_for(h) for g, h in zip(self.param_groups, hs)
                for i in self._indices(g)}
        for name in self.buffer_names:                 # what _from_state wants, no more
            for i in range(len(self.params)):
                if self.steps[i] > 0 and name in uses[i]:
                    sd[f"{name}.{i}"] = np.array(backend.to_numpy(self._buffer(name, i)))
        return sd

    def _indices(self, group):
        return [self._slot[id(p)] for p in group["params"]]

    def load_state_dict(self, sd):
        """Restore a state_dict() of this kind of optimizer over the same parameters, all or
        nothing: a new optimizer is built from it and checked, then this one takes its fields."""
        try:
            new = self._from_state(sd)
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}.load_state_dict: nothing was loaded; {e}") \
                from None
        vars(self).update(vars(new))
        return self

    def _saved_groups(self, sd):
        """The state's param groups over our parameters; the constructor checks the rest."""
        if "param_groups" not in sd:
            if len(self.param_groups) != 1:
                raise ValueError(f"param_groups: the state has 1, the optimizer "
                                 f"{len(self.param_groups)}")
            missing = [k for k in ("steps", *self.required) if k not in sd]
            if missing:
                raise ValueError(f"missing keys {missing}")
            return [{"params": self.params, **self.absent_means,
                     **{k: sd[k] for k in self.defaults if k in sd}}]
        saved = sd["param_groups"]
        if not isinstance(saved, list) or len(saved) != len(self.param_groups):
            raise ValueError(f"param_groups: the state has {saved!r:.60}, the optimizer "
                             f"{len(self.param_groups)} groups")
        groups = []
        for gi, (g, mine) in enumerate(zip(saved, self.param_groups)):
            if not isinstance(g, dict) or g.get("params") != self._indices(mine):
                raise ValueError(f"param_groups[{gi}]: the state's is {g!r:.60}; the "
                                 f"optimizer's holds parameters {self._indices(mine)}")
            missing = [k for k in self.required if k not in g]
            if missing:
                raise ValueError(f"param_groups[{gi}]: missing keys {missing}")
            groups.append({**self.absent_means, **g, "params": mine["params"]})
        return groups

    def _from_state(self, sd):
        """The hyperparameters pass the constructor's checks, each step count is an int >= 0,
        and a buffer is there exactly for each parameter that has taken a step and whose
        group's hyperparameters use it (checked_array)."""
        kind, n = type(self).__name__, len(self.params)
        if sd.get("kind") != kind:
            raise ValueError(f"state is for {sd.get('kind')!r}, not {kind}")
        groups = self._saved_groups(sd)
        if "steps" not in sd:
            raise ValueError("missing keys ['steps']")
        new, steps = type(self)(groups, **self.defaults), sd["steps"]
        if not isinstance(steps, (list, tuple)):
            raise ValueError(f"steps must be a list of step counts, got {steps!r}")
        if len(steps) != n:
            raise ValueError(f"steps: the state has {len(steps)} parameters, the optimizer {n}")
        new.steps = [check_int(f"steps[{i}]", s, 0) for i, s in enumerate(steps)]
        wanted = {f"{b}.{i}": (b, i) for g in new.param_groups
                  for b in new._buffers_for(new._checked(g, f"{kind}: "))
                  for i in new._indices(g) if new.steps[i] > 0}
        names = ("kind", "steps", "param_groups", *self.defaults)
        unexpected = [k for k in sd if k not in wanted and k not in names]
        absent = [k for k in wanted if k not in sd]
        if unexpected or absent:
            raise ValueError(f"unexpected key {unexpected[0]!r}" if unexpected else
                             f"missing buffers {absent} (of the parameters that took a step)")
        for key, (b, i) in wanted.items():
            new.buffers[b][i] = backend.xp().asarray(checked_array(key, sd[key], self.params[i]))
        return new

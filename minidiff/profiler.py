"""Where the time goes: an op-level profile of the engine, forward and backward.

    with minidiff.profile() as prof:
        loss = diffusion.training_losses(model, x0).mean()
        loss.backward()
    print(prof.table(top=15))          # op, forward ms, backward ms, calls, MB, share
    prof.totals()                      # the same numbers as a dict, for programs and tests

One switch, off by default. Every public op in functional/ is defined under `@op`
(tensor.py), which times it under its function's name; `@profiled(name)` below does the same
for any other function (grep for both: that list is the whole of what is measured). Off, the
wrapper costs one check of the module global `_current` and one extra Python call per op.

Forward: the time of each op call, exclusive. An op that calls another op (unsqueeze calls
reshape) is timed without the time of the op it called: a stack holds, for every op in
progress, the time its children took, which is subtracted from its own. A hook in
Tensor.make could not do this: make runs after the op's arithmetic, so it knows when an op
ends but not when it began.
Backward: Tensor.backward hands each node to `run_backward` below, which, while profiling,
times the node's _backward() closure and files it under the node's op name (Tensor._op: the
name of the @op function that made the node).

Bytes: the forward counts the nbytes of the array each op returns, unless it is a view of an
input or a nested op's result (reshape, transpose and getitem allocate nothing). The backward
counts the nbytes of the gradient arrays a node leaves in its inputs' .grad, unless they are
views of its own gradient (add passes it through). Temporaries inside an op are not counted.

What is not in any op (the optimizer, the diffusion arithmetic on bare arrays, the Python
between ops, backward's topological sort) shows as "(outside ops)": the block's wall time
less the time of the ops.

On a GPU, CuPy launches kernels asynchronously, so a clock read right after a launch measures
the launch, not the kernel. While profiling on the "cuda" device we therefore synchronise the
current stream before every clock read (`_sync`); this slows the profiled run a little, and
never runs when the profiler is off. Not thread-safe: profile one thread at a time.
"""
import functools
import time

from . import backend

_current = None        # the Profile recording now, or None (off): the one switch


def profiled(name):
    """Decorator for any function: `@profiled("sampler")` times each call under `name` while a
    profile() is active, and calls it straight through otherwise. (functional's ops have
    `@op`, tensor.py, which does this under the op's function name and names its output.)"""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            if _current is None:
                return fn(*args, **kwargs)
            return _current._forward(name, fn, args, kwargs)
        return run
    return wrap


def profile():
    """`with minidiff.profile() as prof:` records every op run inside the block."""
    return Profile()


def run_backward(node):
    """node._backward() for Tensor.backward: straight through, or timed while profiling."""
    if _current is None:
        node._backward()
    else:
        _current._backward(node)


def _sync():
    """Wait for the GPU to finish its queued work, so that a clock read means something."""
    xp = backend.xp()
    if backend.get_device() == "cuda" and hasattr(xp, "cuda"):   # not the CPU emulator's NumPy
        xp.cuda.get_current_stream().synchronize()


def _array(grad):
    """The array of a .grad (a Tensor, or None): what a backward step may have replaced."""
    return None if grad is None else grad.data


def _root(a):
    """The array that owns a's memory: NumPy and CuPy point a view's .base at the owner."""
    base = getattr(a, "base", None)
    return a if base is None else base


def _arrays(args):
    """The arrays among an op's arguments: Tensors' data, bare arrays, and those in lists."""
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _arrays(a)
        elif hasattr(a, "nbytes"):
            yield a
        elif hasattr(getattr(a, "data", None), "nbytes"):
            yield a.data


def _forward_bytes(out, args, child_outs):
    """nbytes of the array an op returned, 0 if it is an input's memory or a child's result."""
    data = getattr(out, "data", None)
    if not hasattr(data, "nbytes") or any(out is c for c in child_outs):
        return 0
    root = _root(data)
    if any(_root(a) is root for a in _arrays(args)):
        return 0
    return data.nbytes


class OpStats:
    """What one op name has cost so far."""
    __slots__ = ("forward_s", "backward_s", "calls", "backward_calls",
                 "forward_bytes", "backward_bytes")

    def __init__(self):
        self.forward_s = self.backward_s = 0.0
        self.calls = self.backward_calls = self.forward_bytes = self.backward_bytes = 0

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}


class Profile:
    """The record of one or more `with` blocks: per op name, time and bytes, both ways."""

    def __init__(self):
        self.ops = {}              # op name -> OpStats
        self.wall_s = 0.0          # time inside the `with` blocks
        self._stack = []           # per op in progress: [its children's seconds, their outputs]
        self._t0 = None

    def __enter__(self):
        global _current
        if _current is not None:
            raise RuntimeError("profile: a profile is already recording; profiles do not "
                               "nest (read the outer one's table instead)")
        self._stack = []
        _sync()
        self._t0 = time.perf_counter()
        _current = self
        return self

    def __exit__(self, *exc):
        global _current
        _current = None                                   # off first, whatever happens next
        _sync()
        self.wall_s += time.perf_counter() - self._t0
        self._t0 = None
        self._stack = []
        return False

    def _stats(self, name):
        s = self.ops.get(name)
        if s is None:
            s = self.ops[name] = OpStats()
        return s

    # ------------------------------------------------------------------ measuring
    def _forward(self, name, fn, args, kwargs):
        """Call the op fn(*args, **kwargs), timed exclusively of the ops it calls."""
        _sync()
        t0 = time.perf_counter()
        self._stack.append([0.0, []])
        try:
            out = fn(*args, **kwargs)
            _sync()
        finally:
            elapsed = time.perf_counter() - t0
            child_s, child_outs = self._stack.pop()
        if self._stack:                                   # we are a child of the op below us
            self._stack[-1][0] += elapsed
            self._stack[-1][1].append(out)
        s = self._stats(name)
        s.forward_s += elapsed - child_s
        s.calls += 1
        s.forward_bytes += _forward_bytes(out, args, child_outs)
        return out

    def _backward(self, node):
        """Run node._backward() (run_backward calls this while profiling), timed, and count
        the fresh gradient arrays it left in node._prev."""
        before = {id(p): _array(p.grad) for p in node._prev}
        _sync()
        t0 = time.perf_counter()
        node._backward()
        _sync()
        elapsed = time.perf_counter() - t0
        if self._stack:                                   # backward() called inside an op
            self._stack[-1][0] += elapsed
        seen = set() if node.grad is None else {id(_root(node.grad.data))}
        nbytes = 0
        for p in node._prev:
            g = _array(p.grad)
            if g is None or g is before[id(p)] or id(_root(g)) in seen:
                continue
            seen.add(id(_root(g)))
            nbytes += g.nbytes
        s = self._stats(node._op)
        s.backward_s += elapsed
        s.backward_calls += 1
        s.backward_bytes += nbytes

    # ------------------------------------------------------------------ reading
    def _wall(self):
        running = 0.0 if self._t0 is None else time.perf_counter() - self._t0
        return self.wall_s + running

    def totals(self):
        """{op name: {forward_s, backward_s, calls, backward_calls, forward_bytes,
        backward_bytes}}, plus "(outside ops)" and "(wall)" entries with forward_s only."""
        d = {name: s.as_dict() for name, s in self.ops.items()}
        in_ops = sum(s.forward_s + s.backward_s for s in self.ops.values())
        for name, seconds in (("(outside ops)", self._wall() - in_ops), ("(wall)", self._wall())):
            d[name] = dict(OpStats().as_dict(), forward_s=seconds)
        return d

    def table(self, top=15):
        """The `top` ops by forward + backward time, as a printable table; then the other ops,
        the time outside any op, and the wall time of the `with` block(s)."""
        wall = self._wall()
        rows = sorted(self.ops.items(), key=lambda kv: -(kv[1].forward_s + kv[1].backward_s))
        head = (f"{'op':<20}{'fwd ms':>9}{'bwd ms':>9}{'total ms':>10}{'calls':>7}"
                f"{'bwd calls':>10}{'MB':>8}{'share':>7}")
        lines = [head, "-" * len(head)]

        def line(name, seconds, ops):
            fwd = sum(s.forward_s for s in ops)
            bwd = sum(s.backward_s for s in ops)
            calls = sum(s.calls for s in ops)
            bcalls = sum(s.backward_calls for s in ops)
            mb = sum(s.forward_bytes + s.backward_bytes for s in ops) / 1e6
            share = seconds / wall if wall > 0 else 0.0
            cols = (f"{fwd * 1e3:>9.2f}{bwd * 1e3:>9.2f}" if ops else f"{'-':>9}{'-':>9}")
            lines.append(f"{name:<20}{cols}{seconds * 1e3:>10.2f}{calls:>7}{bcalls:>10}"
                         f"{mb:>8.1f}{share:>7.1%}")

        for name, s in rows[:top]:
            line(name, s.forward_s + s.backward_s, [s])
        rest = [s for _, s in rows[top:]]
        if rest:
            line(f"({len(rest)} more ops)", sum(s.forward_s + s.backward_s for s in rest), rest)
        in_ops = sum(s.forward_s + s.backward_s for _, s in rows)
        line("(outside ops)", wall - in_ops, [])
        lines.append("-" * len(head))
        line("total (wall)", wall, [s for _, s in rows])
        return "\n".join(lines)

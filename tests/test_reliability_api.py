"""The public API fails loudly and early, or not at all: MINIDIFF_DEVICE never breaks the
import, axes are read as NumPy reads them, load_state_dict is all or nothing, and a second
backward() through a freed graph says so."""
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidiff
from minidiff import backend
from minidiff import functional as F
from minidiff.nn import GroupNorm, Linear, Module, Sequential, SiLU
from minidiff.optim import EMA, SGD, Adam, AdamW
from minidiff.tensor import Tensor

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- MINIDIFF_DEVICE
def run_python(args, device, tmp_path):
    """Run `python args` with MINIDIFF_DEVICE=device where `import cupy` fails (a cupy.py
    first on the path raises ImportError) and writes a line to cupy.log each time it is tried."""
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "cupy.py").write_text(
        "import os\n"
        "with open(os.environ['CUPY_LOG'], 'a') as f:\n"
        "    f.write('import cupy\\n')\n"
        "raise ImportError('cupy is blocked by this test')\n")
    env = dict(os.environ, MINIDIFF_DEVICE=device, CUPY_LOG=str(tmp_path / "cupy.log"),
               PYTHONPATH=os.pathsep.join([str(blocker), str(ROOT)]))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def cupy_imports(tmp_path):
    log = tmp_path / "cupy.log"
    return log.read_text().count("import cupy") if log.exists() else 0


def test_cuda_wish_without_cupy_imports_and_set_device_cpu_wins(tmp_path):
    r = run_python(["-c", "import minidiff\n"
                          "minidiff.manual_seed(0)\n"
                          "minidiff.set_device('cpu')\n"
                          "x = minidiff.Tensor([1.0, 2.0], requires_grad=True)\n"
                          "(x * x).sum().backward()\n"
                          "print(minidiff.get_device(), x.grad.tolist())\n"], "cuda", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["cpu", "[2.0,", "4.0]"]
    assert cupy_imports(tmp_path) == 0          # the wish was only recorded, never acted on


def test_cuda_wish_without_cupy_fails_at_first_use_with_the_cupy_message(tmp_path):
    r = run_python(["-c", "import minidiff\n"
                          "for use in (lambda: minidiff.Tensor([1.0]), minidiff.get_device):\n"
                          "    try:\n"
                          "        use()\n"
                          "    except RuntimeError as e:\n"
                          "        print(e)\n"], "cuda", tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]          # every use fails the same way
    assert lines[0].startswith("MINIDIFF_DEVICE=cuda: device 'cuda' needs CuPy, which is not "
                               "installed: pip install")
    assert cupy_imports(tmp_path) == 2


def test_cli_help_works_under_a_cuda_wish_without_cupy(tmp_path):
    r = run_python(["-m", "minidiff", "--help"], "cuda", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: minidiff")


def test_an_invalid_device_name_fails_at_first_use_in_one_line(tmp_path):
    r = run_python(["-c", "import minidiff\n"
                          "try:\n"
                          "    minidiff.Tensor([1.0])\n"
                          "except ValueError as e:\n"
                          "    print(e)\n"
                          "minidiff.set_device('cpu')\n"
                          "print((minidiff.Tensor([3.0]) * 2).item())\n"], " GPU ", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "MINIDIFF_DEVICE='gpu' is not a device; allowed: 'cpu', 'cuda'", "6.0"]


def test_a_cuda_wish_is_acted_on_at_first_use_when_cupy_is_there(monkeypatch):
    # A stand-in for CuPy that counts how often it is asked for a GPU: the device is
    # only chosen at first use, as set_device("cuda") chose it before.
    asked = []
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=lambda: asked.append(1) or 1)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setenv("MINIDIFF_DEVICE", "cuda")
    backend._init_from_env()
    minidiff.manual_seed(3)                          # seeding is not a use of the device
    assert asked == []
    assert backend.xp() is fake and asked == [1]
    assert minidiff.get_device() == "cuda" and asked == [1]
    assert isinstance(backend.rng(), backend.DeviceDraws)

    backend._init_from_env()
    minidiff.set_device("cpu")                       # an explicit choice overrules the wish
    assert backend.xp() is np and minidiff.get_device() == "cpu" and asked == [1]


# ---------------------------------------------------------------------------- axes
@st.composite
def pieces_and_axis(draw):
    """Arrays for concat, mostly of fitting shapes, sometimes not; an axis in or out of range."""
    ndim = draw(st.integers(0, 3))
    base = draw(st.lists(st.integers(0, 3), min_size=ndim, max_size=ndim))
    shapes = []
    for _ in range(draw(st.integers(1, 3))):
        shape = list(base)
        change = draw(st.sampled_from(["none", "none", "one size", "one size", "add axis",
                                       "drop axis"]))
        if change == "one size" and shape:
            shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(0, 3))
        elif change == "add axis":
            shape.append(draw(st.integers(1, 2)))
        elif change == "drop axis" and shape:
            shape.pop()
        shapes.append(tuple(shape))
    r = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return [r.standard_normal(s) for s in shapes], draw(st.integers(-5, 5))


@given(pieces_and_axis())
def test_concat_raises_exactly_when_numpy_does_and_matches_it_otherwise(case):
    arrays, axis = case
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    try:
        ref = np.concatenate(arrays, axis=axis)
    except ValueError:                                 # numpy's AxisError is a ValueError
        with pytest.raises(ValueError, match="^concat: "):
            F.concat(ts, axis=axis)
        return
    out = F.concat(ts, axis=axis)
    np.testing.assert_array_equal(out.data, ref)
    # d/d piece of sum(w * out) is w's block for that piece: np.split of w at the boundaries.
    w = np.random.default_rng(0).standard_normal(ref.shape)
    (out * Tensor(w)).sum().backward()
    bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1]
    for t, g in zip(ts, np.split(w, bounds, axis=axis)):
        np.testing.assert_array_equal(t.grad, g)


def test_concat_of_a_tensor_with_itself_sums_both_blocks_of_the_gradient():
    a = Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    w = np.arange(12.0).reshape(3, 4)
    (F.concat([a, a], axis=-1) * Tensor(w)).sum().backward()
    np.testing.assert_array_equal(a.grad, w[:, :2] + w[:, 2:])


def test_concat_names_the_bad_axis_and_the_0d_input():
    a = Tensor(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"^concat: axis 2 is out of range for a 2-d tensor; "
                                         r"allowed: \[-2, 2\)$"):
        F.concat([a, a], axis=2)
    with pytest.raises(ValueError, match="^concat: tensor 0 is 0-d"):
        F.concat([Tensor(1.0), Tensor(2.0)])
    with pytest.raises(ValueError, match="^concat: axis must be an int, got 1.0$"):
        F.concat([a, a], axis=1.0)


@st.composite
def array_and_axes(draw):
    ndim = draw(st.integers(0, 3))
    shape = draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    axes = draw(st.none() | st.lists(st.integers(-4, 4), max_size=4).map(tuple)
                | st.permutations(range(ndim)).map(tuple))
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape), axes


@given(array_and_axes())
def test_transpose_raises_exactly_when_numpy_does_and_matches_it_otherwise(case):
    a, axes = case
    x = Tensor(a, requires_grad=True)
    try:
        ref = np.transpose(a, axes)
    except ValueError:
        with pytest.raises(ValueError, match="^transpose: "):
            F.transpose(x, axes)
        return
    out = F.transpose(x, axes)
    np.testing.assert_array_equal(out.data, ref)
    w = np.random.default_rng(1).standard_normal(ref.shape)
    (out * Tensor(w)).sum().backward()
    # out[i] = x[perm(i)], so x.grad, moved the way x was, must land exactly on w
    np.testing.assert_array_equal(np.transpose(x.grad, axes), w)


# ---------------------------------------------------------------------------- load_state_dict
class Net(Module):
    def __init__(self):
        super().__init__()
        self.body = Sequential(Linear(3, 4), SiLU(), Linear(4, 2))
        self.norm = GroupNorm(1, 2)


def snapshot(net):
    return {n: p.data.copy() for n, p in net.named_parameters()}


def assert_bit_identical(net, before):
    for n, p in net.named_parameters():
        assert p.data.dtype == before[n].dtype and p.data.tobytes() == before[n].tobytes(), n


BAD_VALUES = {                       # corruption -> (a bad value for an array of `shape`, match)
    "wrong shape": (lambda shape: np.zeros(shape + (1,)), "expected"),
    "NaN": (lambda shape: np.full(shape, np.nan), "NaN or inf"),
    "inf": (lambda shape: np.full(shape, -np.inf, np.float32), "NaN or inf"),
    "beyond float32": (lambda shape: np.full(shape, 1e39), "NaN or inf"),
    "int": (lambda shape: np.ones(shape, np.int64), "dtype int64 is not a floating dtype"),
    "bool": (lambda shape: np.ones(shape, bool), "dtype bool is not a floating dtype"),
    "complex": (lambda shape: np.ones(shape, np.complex64), "is not a floating dtype"),
}
CORRUPTIONS = sorted(BAD_VALUES) + ["missing", "extra"]


def random_values(sd, seed):
    """A valid state: each array replaced by random numbers of its shape, in float16/32/64."""
    r = np.random.default_rng(seed)
    dtypes = [np.float16, np.float32, np.float64]
    return {k: (r.standard_normal(v.shape).astype(dtypes[r.integers(3)])
                if isinstance(v, np.ndarray) else v) for k, v in sd.items()}


def corrupt(sd, key, corruption):
    """sd with `key` corrupted; returns it and what the error must say besides the key."""
    sd = dict(sd)
    if corruption == "missing":
        del sd[key]
        return sd, key, "missing"
    if corruption == "extra":
        sd[key + "_extra"] = np.zeros(1)
        return sd, key + "_extra", "unexpected"
    make, match = BAD_VALUES[corruption]
    sd[key] = make(np.shape(sd[key]))
    return sd, key, match


@given(st.integers(0, 2**32 - 1), st.integers(0, 5), st.sampled_from(CORRUPTIONS))
def test_module_load_state_dict_is_all_or_nothing(seed, which, corruption):
    net = Net()
    before = snapshot(net)
    good = random_values(net.state_dict(), seed)
    key = sorted(good)[which]
    bad, name, match = corrupt(good, key, corruption)
    with pytest.raises(ValueError, match="nothing was loaded") as e:
        net.load_state_dict(bad)
    assert name in str(e.value) and match in str(e.value) and "\n" not in str(e.value)
    assert_bit_identical(net, before)

    net.load_state_dict(good)
    for n, p in net.named_parameters():             # float16/32/64 cast exactly as numpy does
        np.testing.assert_array_equal(p.data, good[n].astype(np.float32))
        assert p.dtype == np.float32


def trained(make_opt, seed):
    """A model, its optimizer after two steps (buffers exist) and an EMA after two updates."""
    minidiff.manual_seed(seed)
    net = Net()
    opt, ema = make_opt(net.parameters()), EMA(net, decay=0.9)
    x = Tensor(np.random.default_rng(seed).standard_normal((5, 3)).astype(np.float32))
    for _ in range(2):
        opt.zero_grad()
        (net.body(x) ** 2).mean().backward()
        opt.step()
        ema.update()
    return net, opt, ema


def assert_same_state(sd, ref):
    assert sorted(sd) == sorted(ref)
    for k, v in ref.items():
        if isinstance(v, np.ndarray):
            assert sd[k].dtype == v.dtype and sd[k].tobytes() == v.tobytes(), k
        else:
            assert sd[k] == v, k


OPTIMIZERS = {"SGD": lambda ps: SGD(ps, lr=0.1, momentum=0.9),
              "Adam": lambda ps: Adam(ps, lr=1e-2),
              "AdamW": lambda ps: AdamW(ps, lr=1e-2)}
BAD_SCALARS = {                      # corruption -> (how, what the error says, naming the key)
    "steps too short": (lambda sd: sd.update(steps=[1, 2]),
                        "steps: the state has 2 parameters, the optimizer 6"),
    "steps not a list": (lambda sd: sd.update(steps=3), "steps must be a list of step counts"),
    "negative step": (lambda sd: sd["steps"].__setitem__(0, -1),
                      "steps[0]: must be an int >= 0, got -1"),
    "fractional step": (lambda sd: sd["steps"].__setitem__(1, 1.5),
                        "steps[1]: must be an int >= 0, got 1.5"),
    "bool step": (lambda sd: sd["steps"].__setitem__(2, True),
                  "steps[2]: must be an int >= 0, got True"),
    "lr NaN": (lambda sd: sd.update(lr=float("nan")), "lr: must be a finite number in [0, inf]"),
    "no lr": (lambda sd: sd.pop("lr"), "missing keys ['lr']"),
}


@given(st.sampled_from(sorted(OPTIMIZERS)), st.integers(0, 2**32 - 1), st.integers(0, 99),
       st.sampled_from(CORRUPTIONS + sorted(BAD_SCALARS)))
def test_optimizer_load_state_dict_is_all_or_nothing(kind, seed, which, corruption):
    net, opt, _ = trained(OPTIMIZERS[kind], 0)
    ref = opt.state_dict()
    params = snapshot(net)
    good = random_values(trained(OPTIMIZERS[kind], 1)[1].state_dict(), seed)
    if corruption in BAD_SCALARS:
        change, match = BAD_SCALARS[corruption]
        bad, name = dict(good, steps=list(good["steps"])), ""
        change(bad)
    else:
        arrays = sorted(k for k, v in good.items() if isinstance(v, np.ndarray))
        bad, name, match = corrupt(good, arrays[which % len(arrays)], corruption)
    with pytest.raises(ValueError, match=f"^{kind}.load_state_dict: nothing was loaded") as e:
        opt.load_state_dict(bad)
    assert name in str(e.value) and match in str(e.value) and "\n" not in str(e.value)
    assert_same_state(opt.state_dict(), ref)
    assert_bit_identical(net, params)

    opt.load_state_dict(good)
    expected = {k: v.astype(np.float32) if isinstance(v, np.ndarray) else v
                for k, v in good.items()}
    assert_same_state(opt.state_dict(), expected)


def test_optimizer_buffers_must_be_there_for_every_parameter_that_took_a_step():
    _, opt, _ = trained(OPTIMIZERS["Adam"], 0)
    sd = opt.state_dict()
    del sd["v.3"]
    with pytest.raises(ValueError, match=r"missing buffers \['v.3'\]"):
        opt.load_state_dict(sd)
    sd = dict(opt.state_dict(), steps=[0] * 6)      # no step taken: no moments expected
    with pytest.raises(ValueError, match="unexpected key 'm.0'"):
        opt.load_state_dict(sd)


@given(st.integers(0, 2**32 - 1), st.integers(0, 5),
       st.sampled_from(CORRUPTIONS + ["decay", "num_updates"]))
def test_ema_load_state_dict_is_all_or_nothing(seed, which, corruption):
    _, _, ema = trained(OPTIMIZERS["SGD"], 0)
    ref = ema.state_dict()
    good = random_values(trained(OPTIMIZERS["SGD"], 1)[2].state_dict(), seed)
    good["num_updates"] = 7
    if corruption in ("decay", "num_updates"):
        value, match = {"decay": (1.5, "decay: must be a finite number in [0, 1], got 1.5"),
                        "num_updates": (-2, "num_updates: must be an int >= 0, got -2")}[corruption]
        bad, name = dict(good, **{corruption: value}), corruption
    else:
        key = sorted(k for k in good if k.startswith("shadow."))[which]
        bad, name, match = corrupt(good, key, corruption)
    with pytest.raises(ValueError, match="^EMA.load_state_dict: nothing was loaded") as e:
        ema.load_state_dict(bad)
    assert name in str(e.value) and match in str(e.value) and "\n" not in str(e.value)
    assert_same_state(ema.state_dict(), ref)

    ema.load_state_dict(good)
    expected = {k: v.astype(np.float32) if isinstance(v, np.ndarray) else v
                for k, v in good.items()}
    assert_same_state(ema.state_dict(), expected)


# ---------------------------------------------------------------------------- backward twice
FREED = r"^backward: the graph behind this tensor \(at a '\w+' op\) was already freed by an " \
        r"earlier backward\(\); call backward\(\) once per forward pass"


def test_a_second_backward_through_a_freed_graph_raises_and_changes_nothing():
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, -4.0, 6.0])             # d/dx Σx² = 2x
    with pytest.raises(RuntimeError, match=FREED):
        y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, -4.0, 6.0])             # not 4x, not 0

    x.grad = None
    (x * x * x).sum().backward()                                        # a fresh forward
    np.testing.assert_array_equal(x.grad, [3.0, 12.0, 27.0])            # d/dx Σx³ = 3x²


def test_a_new_graph_through_a_freed_intermediate_raises_instead_of_dropping_gradient():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3.0
    h.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    with pytest.raises(RuntimeError, match=FREED):
        (h * h).sum().backward()             # before, x silently got no gradient from this
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])

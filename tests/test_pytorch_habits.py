"""A PyTorch user's habits (issue 23): first a training script written the way such a user
writes one, in order, then each habit on its own against an oracle (the array form that always
worked, a naive walk written here, NumPy's generator, the file's own bytes).

The messages of the issue that these tests hold to account, each failing on the base commit:
`model(x, 5)` ("object of type 'int' has no len()"), `model(x, minidiff.Tensor(t))`
("getitem: index 2 out of range"), `next(model.parameters())` ("'list' object is not an
iterator"), the missing Module and top-level names, load_state_dict(strict=False) returning the
module, no progress= on the samplers and the bound, a 74-pixel-wide grid, `sample --sampler
ddim` overwriting the ancestral picture, no `train --config`, and gradients as bare arrays
(`p.grad.norm()`: "'numpy.ndarray' object has no attribute 'norm'"; `p.grad.zero_()`).
"""
import json
import re
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidiff
from minidiff import Tensor, backend, viz
from minidiff.cli import main
from minidiff.diffusion import (GaussianDiffusion, ddim_sample_loop, flow_euler_sample,
                                linear_beta_schedule)
from minidiff.models import MLPDenoiser, UNet, unet_from_preset
from minidiff.nn import Linear, Module, Parameter, Sequential, SiLU
from minidiff.optim import AdamW

SMALL = dict(image_size=8, base_channels=8, groups=4, attn_resolutions=(4,))   # a fast U-Net
T = 25


def small_unet(seed=0, **kw):
    minidiff.manual_seed(seed)
    return unet_from_preset("tiny", **SMALL, **kw)


# ---------------------------------------------------------------------------- the script
def test_a_pytorch_users_training_script(tmp_path, capsys):
    model = small_unet()                                       # build a tiny U-Net
    first = next(model.parameters())                           # the habit: an iterator
    assert first is next(iter(dict(model.named_parameters()).values()))
    name, p = next(model.named_parameters())
    assert p is first and name == "temb0.weight"

    x = minidiff.randn(3, 1, 8, 8)                             # (B, C, H, W)
    ref = model(x, np.array([5, 5, 5])).data                   # the form that always worked
    np.testing.assert_array_equal(model(x, 5).data, ref)       # base: int has no len()
    ts = [0, 2, 5]
    ref = model(x, np.array(ts)).data
    np.testing.assert_array_equal(model(x, minidiff.tensor(ts)).data, ref)
    np.testing.assert_array_equal(model(x, Tensor(np.array(ts))).data, ref)   # base: getitem

    opt = AdamW(model.parameters(), lr=1e-2)                   # a generator, as in PyTorch
    target = minidiff.randn(3, 1, 8, 8)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    for _ in range(3):
        loss = ((model(x, ts) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not np.array_equal(before[k], v) for k, v in model.state_dict().items()
               if k.endswith("weight") and "conv_out" not in k)

    path = tmp_path / "model.safetensors"
    minidiff.save(model.state_dict(), path)
    other = small_unet(seed=1)
    assert other.load_state_dict(minidiff.load(path)) == ([], [])
    model.eval(), other.eval()
    np.testing.assert_array_equal(other(x, ts).data, model(x, ts).data)

    state = minidiff.load(path)
    state["extra.weight"] = state.pop("conv_in.bias")
    missing, unexpected = other.load_state_dict(state, strict=False)
    assert (missing, unexpected) == (["conv_in.bias"], ["extra.weight"])

    with minidiff.inference_mode():
        out = model(x, 4)
        assert not minidiff.is_grad_enabled()
    assert not out.requires_grad and minidiff.is_grad_enabled()

    d = GaussianDiffusion(linear_beta_schedule(T))
    minidiff.manual_seed(7)
    quiet = d.p_sample_loop(model, (2, 1, 8, 8))
    capsys.readouterr()
    minidiff.manual_seed(7)
    shown = d.p_sample_loop(model, (2, 1, 8, 8), progress=True)
    err = capsys.readouterr().err
    assert re.search(rf"sample: 100%.*\b{T}/{T}\b", err), err            # tqdm's bar
    np.testing.assert_array_equal(shown, quiet)                # the bar changes no number


# ---------------------------------------------------------------------------- timesteps
FORMS = {                                # how a user may write the batch's timesteps
    "list": list,
    "int64 array": lambda ts: np.array(ts, dtype=np.int64),
    "int32 array": lambda ts: np.array(ts, dtype=np.int32),
    "whole floats": lambda ts: np.array(ts, dtype=np.float64),
    "minidiff.tensor": minidiff.tensor,
    "Tensor": lambda ts: Tensor(np.array(ts)),
}


@settings(max_examples=20, deadline=None)
@given(ts=st.lists(st.integers(0, T - 1), min_size=1, max_size=4),
       form=st.sampled_from(sorted(FORMS)))
def test_every_form_of_timesteps_is_the_int64_array(ts, form):
    d = GaussianDiffusion(linear_beta_schedule(T))
    net = MLPDenoiser(2, 8, 8, 1)
    x0 = np.random.default_rng(0).standard_normal((len(ts), 2)).astype(np.float32)
    noise = np.ones_like(x0)
    ref = d.q_sample(x0, np.array(ts, dtype=np.int64), noise)
    np.testing.assert_array_equal(d.q_sample(x0, FORMS[form](ts), noise), ref)
    np.testing.assert_array_equal(net(x0, FORMS[form](ts)).data,
                                  net(x0, np.array(ts, dtype=np.int64)).data)
    got = d.training_losses(net, x0, t=FORMS[form](ts), noise=noise).data
    np.testing.assert_array_equal(got, d.training_losses(net, x0, t=np.array(ts),
                                                         noise=noise).data)


@given(t=st.integers(0, T - 1))
@settings(max_examples=10, deadline=None)
def test_one_int_is_repeated_over_the_batch(t):
    d = GaussianDiffusion(linear_beta_schedule(T))
    x0 = np.arange(6, dtype=np.float32).reshape(3, 2)
    ref = d.q_sample(x0, np.full(3, t), np.ones_like(x0))
    np.testing.assert_array_equal(d.q_sample(x0, t, np.ones_like(x0)), ref)
    np.testing.assert_array_equal(d.q_sample(x0, np.int64(t), np.ones_like(x0)), ref)


@pytest.mark.parametrize("t, message", [
    ([0.5, 1, 2], "t: must hold integer timestep indices, got fractional values such as 0.5"),
    (T, f"t: indices must lie in [0, {T - 1}]"),
    (Tensor(np.array([-1.0, 0.0, 1.0])), f"t: indices must lie in [0, {T - 1}]"),
    ([1, 2], "t: must have shape (B,) = (3,)"),
    ([True, False, True], "t: timesteps must be integers (or floats), got dtype bool"),
    ([np.nan, 1, 2], "t: timesteps must be finite"),
])
def test_bad_timesteps_are_refused_in_one_line(t, message):
    d = GaussianDiffusion(linear_beta_schedule(T))
    with pytest.raises(ValueError) as e:
        d.q_sample(np.zeros((3, 2), np.float32), t)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


IMAGES = np.random.default_rng(5).standard_normal((3, 1, 8, 8)).astype(np.float32)


def test_the_unet_takes_one_int_or_a_list():
    model = small_unet()
    ref = model(IMAGES, np.array([4, 4, 4])).data
    np.testing.assert_array_equal(model(IMAGES, 4).data, ref)       # base: int has no len()
    np.testing.assert_array_equal(model(IMAGES, [4, 4, 4]).data, ref)


def test_the_unet_takes_a_tensor_of_timesteps():
    model = small_unet()
    ref = model(IMAGES, np.array([4, 4, 4])).data
    np.testing.assert_array_equal(model(IMAGES, Tensor(4.0)).data, ref)   # base: len() of 0-d
    np.testing.assert_array_equal(model(IMAGES, Tensor([4.0])).data, ref)
    ref = model(IMAGES, np.array([0, 2, 4])).data
    np.testing.assert_array_equal(model(IMAGES, Tensor(np.array([0.0, 2.0, 4.0]))).data, ref)


def test_the_networks_refuse_negative_or_misshapen_timesteps():
    net = MLPDenoiser(2, 8, 8, 1)
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"^MLPDenoiser: t: timesteps must be >= 0"):
        net(x, -1)
    with pytest.raises(ValueError, match=r"t has 2 entries for a batch of 3"):
        net(x, minidiff.tensor([1, 2]))
    np.testing.assert_array_equal(net(x, 2.5).data, net(x, np.full(3, 2.5)).data)  # flow's t


# ---------------------------------------------------------------------------- gradients
def test_a_hand_written_sgd_loop_inspects_steps_and_zeroes_the_grads():
    """A tutorial's loop without an optimizer, on L = mean((x Wᵀ + b - y)²). The oracle: the
    same steps on arrays, with dL/dW = 2/N rᵀx and dL/db = 2/N Σ r, r = x Wᵀ + b - y."""
    minidiff.manual_seed(3)
    x = minidiff.randn(16, 3).double()                         # float32 drawn, made float64
    assert x.dtype == np.float64 and x.float().dtype == np.float32
    np.testing.assert_array_equal(x.float().data, x.data)      # exact in float32
    y = x.sum(axis=1, keepdims=True) * 0.5
    model, lr = Linear(3, 1).double(), 0.1
    W, b = model.weight.data.copy(), model.bias.data.copy()
    for _ in range(3):
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        r = x.data @ W.T + b - y.data                          # (16, 1), the oracle's residual
        gW, gb = 2 / 16 * r.T @ x.data, 2 / 16 * r.sum(0)
        np.testing.assert_allclose(model.weight.grad.data, gW, rtol=1e-12)
        norm = model.weight.grad.norm()                        # base: ndarray has no norm
        assert abs(float(norm) - np.sqrt((gW ** 2).sum())) <= 1e-12 * float(norm)
        assert f"{norm:.4f}" == f"{np.linalg.norm(gW):.4f}"
        assert model.weight.grad.abs().max().item() == pytest.approx(np.abs(gW).max(), 1e-12)
        with minidiff.no_grad():
            for p in model.parameters():
                p -= lr * p.grad                               # SGD by hand
        W, b = W - lr * gW, b - lr * gb
        for p in model.parameters():
            p.grad.zero_()                                     # base: ndarray has no zero_
        np.testing.assert_allclose(model.weight.data, W, rtol=1e-12)
        np.testing.assert_allclose(model.bias.data, b, rtol=1e-12)
    assert all(not p.grad.data.any() for p in model.parameters())


def test_updating_a_parameter_in_place_with_grad_on_is_refused_in_one_line():
    p = Linear(2, 1).weight
    (p * 2.0).sum().backward()
    with pytest.raises(RuntimeError, match=r"^sub_: .*inside `with minidiff.no_grad\(\):`") as e:
        p -= 0.1 * p.grad
    assert "\n" not in str(e.value)
    np.testing.assert_array_equal(p.grad.data, [[2.0, 2.0]])   # the grad survives the refusal


# ---------------------------------------------------------------------------- Module
class Tree(Module):
    def __init__(self):
        super().__init__()
        self.a = Sequential(Linear(2, 3), SiLU())
        self.b = Linear(3, 1)
        self.scale = Tensor(np.float32(2.0))                   # a buffer


def naive_post_order(m):
    """Children before their parent, in attribute order: written out without Module's walk."""
    out = []
    for value in vars(m).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, Module):
                out += naive_post_order(item)
    return out + [m]


def test_children_apply_and_requires_grad_():
    tree = Tree()
    assert list(tree.children()) == [tree.a, tree.b]
    seen = []
    assert tree.apply(seen.append) is tree
    assert seen == naive_post_order(tree) and seen[-1] is tree and len(seen) == 5
    assert tree.requires_grad_(False) is tree
    assert not any(p.requires_grad for p in tree.parameters())
    out = tree.b(tree.a(Tensor(np.ones((4, 2), np.float32))))
    assert not out.requires_grad                               # frozen: no graph at all
    tree.requires_grad_()
    assert all(p.requires_grad for p in tree.parameters())


def test_double_then_float_match_a_model_built_in_that_dtype():
    ref64 = MLPDenoiser(2, 8, 16, 2, dtype=np.float64)
    net = MLPDenoiser(2, 8, 16, 2)                             # float32
    net.load_state_dict(ref64.state_dict())                    # rounded to float32
    ref64.load_state_dict(net.state_dict())                    # the same rounded values
    x, t = np.random.default_rng(1).standard_normal((5, 2)), np.arange(5)       # float64
    assert net.double() is net
    assert all(p.dtype == np.float64 for p in net.parameters())
    np.testing.assert_array_equal(net(x, t).data, ref64(x, t).data)
    ref32 = MLPDenoiser(2, 8, 16, 2)
    ref32.load_state_dict(net.state_dict())
    assert net.float() is net and all(p.dtype == np.float32 for p in net.parameters())
    x = x.astype(np.float32)
    np.testing.assert_array_equal(net(x, t).data, ref32(x, t).data)


def test_cpu_is_to_cpu_and_cuda_is_to_cuda():
    tree = Tree()
    assert tree.cpu() is tree and all(p.device == "cpu" for p in tree.parameters())
    try:
        tree.to("cuda")
    except Exception as e:                                     # no GPU here: the same refusal
        with pytest.raises(type(e), match=re.escape(str(e))):
            tree.cuda()
    else:
        assert tree.cpu().cuda() is tree and all(p.device == "cuda" for p in tree.parameters())
        tree.cpu()


def test_strict_load_returns_empty_keys_and_a_failed_load_changes_nothing():
    a, b = Tree(), Tree()
    keys = a.load_state_dict(b.state_dict())
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    bad = {**b.state_dict(), "b.weight": np.zeros((9, 9), np.float32)}
    before = a.state_dict()
    with pytest.raises(ValueError, match="nothing was loaded"):
        a.load_state_dict(bad, strict=False)
    assert all(np.array_equal(before[k], v) for k, v in a.state_dict().items())


# ---------------------------------------------------------------------------- top level
def test_randn_and_rand_draw_from_the_seeded_generator():
    minidiff.manual_seed(11)
    got = [minidiff.randn(2, 3), minidiff.rand((4,), dtype=np.float64)]
    rng = np.random.default_rng(11)                            # manual_seed's generator
    np.testing.assert_array_equal(got[0].data, rng.standard_normal((2, 3), dtype=np.float32))
    np.testing.assert_array_equal(got[1].data, rng.random((4,), dtype=np.float64))
    assert got[0].dtype == np.float32 and got[1].dtype == np.float64
    z, o = minidiff.zeros(2, 2, requires_grad=True), minidiff.ones((3,))
    assert z.requires_grad and np.array_equal(z.data, np.zeros((2, 2))) and o.shape == (3,)
    with pytest.raises(ValueError, match=r"^randn: size must be ints >= 0.*got \(2, 'a'\)"):
        minidiff.randn(2, "a")
    with pytest.raises(ValueError, match=r"^zeros: dtype must be float32 or float64"):
        minidiff.zeros(2, dtype=np.int64)


def test_tensor_copies_and_from_numpy_shares():
    a = np.array([1.0, 2.0], np.float32)
    t, shared = minidiff.tensor(a), minidiff.from_numpy(a)
    a[0] = 9.0
    assert t.data[0] == 1.0 and shared.data[0] == 9.0          # PyTorch's semantics
    assert minidiff.tensor([1, 2]).dtype == np.float32
    assert minidiff.tensor([1, 2], dtype=np.float64, requires_grad=True).requires_grad
    with pytest.raises(TypeError, match=r"^from_numpy: expected a NumPy array, got list"):
        minidiff.from_numpy([1.0])


def test_set_grad_enabled_as_a_call_and_a_block_per_thread():
    lin = Linear(2, 2)
    x = Tensor(np.ones((1, 2), np.float32))
    with minidiff.set_grad_enabled(False):
        assert not lin(x).requires_grad
        seen = []
        th = threading.Thread(target=lambda: seen.append(minidiff.is_grad_enabled()))
        th.start()
        th.join(10)
        assert seen == [True]                                  # another thread: untouched
        with minidiff.set_grad_enabled(True):
            assert lin(x).requires_grad
        assert not minidiff.is_grad_enabled()
    assert minidiff.is_grad_enabled()
    minidiff.set_grad_enabled(False)                           # the call form, as PyTorch's
    try:
        assert not lin(x).requires_grad
    finally:
        minidiff.set_grad_enabled(True)
    with minidiff.no_grad(), minidiff.inference_mode(False):   # False changes nothing
        assert not minidiff.is_grad_enabled()
    with pytest.raises(ValueError, match="^set_grad_enabled: mode: must be True or False"):
        minidiff.set_grad_enabled("no")


def test_save_and_load_round_trip_and_refuse_pickles(tmp_path):
    arrays = {"w": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
              "b": np.arange(3, dtype=np.float64), "t": Tensor(np.ones(2, np.float32))}
    minidiff.save(arrays, tmp_path / "s.safetensors")
    back = minidiff.load(tmp_path / "s.safetensors")
    assert sorted(back) == ["b", "t", "w"]
    for k in ("w", "b"):
        assert back[k].dtype == arrays[k].dtype and np.array_equal(back[k], arrays[k])
    np.testing.assert_array_equal(back["t"], np.ones(2, np.float32))
    with pytest.raises(ValueError, match=r"^save: '.*m\.pt': minidiff saves state dicts as "
                                         r"safetensors; name the file \*\.safetensors"):
        minidiff.save(arrays, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(TypeError, match=r"^save: entry 'step' is a int, not an array"):
        minidiff.save({"step": 3}, tmp_path / "o.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{junk")
    with pytest.raises(ValueError, match=r"^load: .*junk\.safetensors: not a readable"):
        minidiff.load(tmp_path / "junk.safetensors")


# ---------------------------------------------------------------------------- progress
def test_the_samplers_and_the_bound_show_progress_and_keep_their_numbers(capsys):
    d = GaussianDiffusion(linear_beta_schedule(T))
    net = MLPDenoiser(4, 8, 8, 1)

    def model(x, t):                                # images (B, 1, 2, 2) through the MLP
        return Tensor(net(x.data.reshape(len(x.data), 4), t).data.reshape(x.shape))
    x0 = np.random.default_rng(2).integers(0, 256, (2, 1, 2, 2)) / 127.5 - 1     # 8-bit
    runs = {}
    for progress in (False, True):
        minidiff.manual_seed(3)
        bpd = d.calc_bpd_loop(model, x0, progress=progress)
        ddim = ddim_sample_loop(d, model, (2, 1, 2, 2), num_steps=3, progress=progress)
        ancestral = d.p_sample_loop(model, (2, 1, 2, 2), progress=progress)
        euler = flow_euler_sample(model, (2, 1, 2, 2), num_steps=4, progress=progress)
        runs[progress] = (bpd["total_bpd"], ddim, capsys.readouterr().err, ancestral, euler)
    assert runs[False][2] == ""
    assert re.search(rf"sample: 100%.*\b{T}/{T}\b", runs[True][2]), runs[True][2]
    assert re.search(r"euler: 100%.*\b4/4\b", runs[True][2]), runs[True][2]
    for i in (3, 4):
        np.testing.assert_array_equal(runs[True][i], runs[False][i])
    assert re.search(rf"bits/dim: 100%.*\b{T}/{T}\b", runs[True][2]), runs[True][2]
    assert re.search(r"ddim: 100%.*\b3/3\b", runs[True][2]), runs[True][2]
    np.testing.assert_array_equal(runs[True][0], runs[False][0])
    np.testing.assert_array_equal(runs[True][1], runs[False][1])
    with pytest.raises(ValueError, match="^progress: must be True or False, got 'yes'"):
        d.p_sample_loop(lambda x, t: x, (1, 2), progress="yes")


# ---------------------------------------------------------------------------- pictures
def test_save_image_grid_makes_a_small_grid_at_least_256_pixels_wide(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, (4, 1, 16, 16))
    img = viz.save_image_grid(x, tmp_path / "g.png", nrow=4)   # 74 pixels wide at scale 1
    assert img.size == (296, 80)                               # scale 4: 4 * (2 + 4 * 18)
    assert np.array_equal(np.asarray(img), np.asarray(viz.image_grid(x, nrow=4, scale=4)))
    big = np.zeros((64, 1, 32, 32))                            # 8 * 34 + 2 = 274 wide
    assert viz.save_image_grid(big, tmp_path / "b.png").size == (274, 274)
    assert viz.save_image_grid(x, tmp_path / "s.png", nrow=4, scale=1).size == (74, 20)


# ---------------------------------------------------------------------------- run folders
TINY = ["--data", "two_moons", "--n-points", "200", "--hidden", "16", "--depth", "1",
        "--time-dim", "8", "--timesteps", "25", "--batch-size", "16", "--n-samples", "20",
        "--steps", "4", "--ckpt-every", "4", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("habits") / "run"
    main(["train", *TINY, "--out-dir", str(out)])
    return out


def test_sample_names_its_picture_by_sampler_and_steps(run, capsys):
    main(["sample", "--run", str(run), "--n", "20"])
    ancestral = (run / "sample-ancestral25-n20.png").read_bytes()
    main(["sample", "--run", str(run), "--n", "20", "--sampler", "ddim", "--ddim-steps", "3",
          "--eta", "1", "--no-ema", "--seed", "2"])
    assert (run / "sample-ddim3-eta1-raw-seed2-n20.png").exists()
    assert (run / "sample-ancestral25-n20.png").read_bytes() == ancestral   # not overwritten
    assert "sample-ddim3-eta1-raw-seed2-n20.png" in capsys.readouterr().out


def test_train_config_repeats_a_run_and_flags_override_it(run, tmp_path, capsys):
    saved = json.loads((run / "config.json").read_text())
    again = tmp_path / "again"
    main(["train", "--config", str(run / "config.json"), "--out-dir", str(again),
          "--hidden", "12", "--quiet"])
    got = json.loads((again / "config.json").read_text())
    assert got == {**saved, "out_dir": str(again), "hidden": 12}
    (tmp_path / "bad.json").write_text(json.dumps({**saved, "hiden": 3}))
    (tmp_path / "lr.json").write_text(json.dumps({"lr": -1.0}))
    (tmp_path / "list.json").write_text("[1, 2]")
    for name, message in [("bad.json", "unknown field 'hiden'"), ("lr.json", "lr: "),
                          ("list.json", "must hold a JSON object"),
                          ("missing.json", "No such file")]:
        with pytest.raises(SystemExit) as e:
            main(["train", "--config", str(tmp_path / name), "--out-dir", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert e.value.code == 1 and err.count("\n") == 1, err
        assert err.startswith(f"minidiff: error: --config {tmp_path / name}: ") and message in err
    assert not (tmp_path / "x").exists()

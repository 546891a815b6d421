"""Flags that would overflow, blow the memory or name a bad file are refused in one line,
before anything big is allocated; and the estimates of minidiff/memory.py hold against the
models they describe and against a measured peak."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from minidiff import backend
from minidiff.cli import main
from minidiff.config import TrainConfig

from test_cli_errors import one_line_failure
from test_train import TINY, cli_args

pytestmark = pytest.mark.usefixtures("one_blas_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HUGE = "99999999999999999999"                   # 10^20: overflows int64 and every array size


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    """A tiny trained 2-D run (T = 50)."""
    out = tmp_path_factory.mktemp("limits") / "run"
    main(["train", *cli_args(TINY), "--steps", "2", "--ckpt-every", "2", "--quiet",
          "--out-dir", str(out)])
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of four grey 20 x 20 pictures."""
    folder = tmp_path_factory.mktemp("photos")
    g = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(g.integers(0, 256, (20, 20), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def usage_error(argv, capsys):
    """argparse's refusal: exit status 2, the last line names the flag. Returns that line."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]

# ------------------------------------------------------------------------------ int flags


@pytest.mark.parametrize("argv, flag, bound", [
    (["sample", "--run", "r", "--n", HUGE], "--n", "[2, 1000000000]"),
    (["sample", "--run", "r", "--seed", HUGE], "--seed", "[0, 9223372036854775807]"),
    (["sample", "--run", "r", "--frames", HUGE], "--frames", "[2, 1000]"),
    (["sample", "--run", "r", "--ddim-steps", HUGE], "--ddim-steps", "[1, 100000]"),
    (["nll", "--run", "r", "--n", HUGE], "--n", "[1, 1000000000]"),
    (["nll", "--run", "r", "--batch-size", HUGE], "--batch-size", "[1, 65536]"),
    (["sample", "--run", "r", "--threads", HUGE], "--threads", "[0, 1024]"),
    # on the old code this trains one step per set, then fails sampling 10^20 points
    (["demo", "--steps", "1", "--timesteps", "21", "--n", HUGE], "--n", "[2, 1000000000]"),
    (["demo", "--steps", HUGE], "--steps", "[1, 1000000000]"),
])
def test_an_int_flag_that_would_overflow_names_its_bound(argv, flag, bound, tmp_path,
                                                          capsys):
    if argv[0] == "demo":
        argv = argv + ["--out-dir", str(tmp_path / "demo")]
    line = usage_error(argv, capsys)
    assert line.endswith(f"error: argument {flag}: must be an int in {bound}, got '{HUGE}'")
    assert not (tmp_path / "demo").exists()

# ------------------------------------------------------------------------------ file names


@pytest.mark.parametrize("name", [".png", "", "sub", "missing/x.png", "x.jpg", "x.png.gif",
                                  " .png", "dir/"])
def test_a_bad_out_name_is_refused_naming_out(run2d, tmp_path, capsys, name):
    (tmp_path / "sub").mkdir()
    out = str(tmp_path / name) if name else ""
    before = sorted(os.listdir(tmp_path))
    line = one_line_failure(["sample", "--run", str(run2d), "--n", "20", "--out", out], capsys)
    assert line.startswith("minidiff: error: --out"), line
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("out_dir", ["", "   "])
def test_an_empty_out_dir_is_refused(out_dir, capsys):
    line = usage_error(["train", *cli_args(TINY), "--out-dir", out_dir], capsys)
    assert line == f"minidiff train: error: --out-dir: must name a folder, got {out_dir!r}"
    line = one_line_failure(["demo", "--out-dir", out_dir], capsys)
    assert line == f"minidiff: error: --out-dir: must name a folder, got {out_dir!r}"

# ------------------------------------------------------------------------------ memory


def refused_quickly(argv, capsys, seconds=5):
    """One line, exit 1, in a few seconds (nothing big was built). Returns the line."""
    t0 = time.perf_counter()
    line = one_line_failure(argv, capsys)
    assert time.perf_counter() - t0 < seconds, line
    return line


def test_a_training_step_bigger_than_any_machine_is_refused_before_it_starts(photos, tmp_path,
                                                                            capsys):
    # tiny at 1024 x 1024: its middle attention runs over 512 x 512 = 2^18 pixels, so one
    # (B, N, N) matrix at batch 256 is 256 x 2^36 floats = 64 TiB (the old code got to 9.7 GB
    # in 49 s, then died of a MemoryError)
    out = tmp_path / "run"
    line = refused_quickly(["train", "--data", "folder", "--data-path", str(photos), "--model",
                            "tiny", "--image-size", "1024", "--out-dir", str(out)], capsys)
    assert "--model tiny on 1x1024x1024 images" in line and "--image-size 1024" in line
    assert "(attention at 512x512: 192 TiB)" in line and "are free" in line, line
    assert not out.exists()
    # the MLP: 65536^2 x 256 weights x 4 bytes x 5 copies = 20 TiB
    line = refused_quickly(["train", "--hidden", "65536", "--depth", "256", "--out-dir",
                            str(out)], capsys)
    assert line.startswith("minidiff: error: --hidden 65536 with --depth 256 and --batch-size "
                           "256 needs about 20 TiB for one training step"), line
    assert not out.exists()


def test_the_sample_picture_of_a_run_counts_too(tmp_path, monkeypatch, capsys):
    # by hand: 10^6 points through layers 4096 wide, the input and output of one alive, 2 x
    # 4096 x 4 bytes each, is 31 GiB at least (the old code trained, then sampled them at once)
    monkeypatch.setattr("minidiff.memory.available_bytes", lambda: 16 << 30)
    line = refused_quickly(["train", "--hidden", "4096", "--n-samples", "1000000", "--steps",
                            "1", "--out-dir", str(tmp_path / "run")], capsys)
    assert "(--n-samples 1000000 in one batch: " in line and "16 GiB are free" in line, line
    assert line.endswith("or --n-samples") and not (tmp_path / "run").exists()


def test_a_refusal_allocates_nothing(photos, tmp_path):
    """The same refusal in a process that may not take more than 3 GiB of address space."""
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
    code = (limit + "import sys; from minidiff.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "train", "--data", "folder", "--data-path",
                        str(photos), "--model", "tiny", "--image-size", "1024", "--batch-size",
                        "1", "--out-dir", str(tmp_path / "run")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert r.stderr.startswith("minidiff: error: --model tiny on 1x1024x1024 images")


def test_sampling_more_than_fits_is_refused_naming_n(run2d, monkeypatch, capsys):
    # 10^8 points, by hand: 10^8 x 2 x 4 bytes x 2 = 1.49 GiB of samples and their
    # concatenation, 10^8 x 64 bytes = 5.96 GiB for matplotlib to draw them, and the 1 GiB a
    # batch of the reverse process may take: 8.45 GiB, refused with 1 GiB free (the old code
    # asked for 48 GiB at once)
    monkeypatch.setattr("minidiff.memory.available_bytes", lambda: 1 << 30)
    line = refused_quickly(["sample", "--run", str(run2d), "--n", "100000000"], capsys)
    assert line == ("minidiff: error: --n 100000000 needs about 8.45 GiB for the samples and "
                    "their picture (the scatter plot: 5.96 GiB), 1 GiB are free; use a "
                    "smaller --n"), line


def test_sampling_runs_in_batches_whose_first_is_the_unbatched_draw(run2d, monkeypatch,
                                                                    tmp_path, capsys):
    from minidiff import cli_common, memory
    from minidiff.train import Trainer
    trainer = Trainer.from_checkpoint(str(run2d))
    monkeypatch.setattr(memory, "SAMPLE_BATCH_BYTES",           # batches of 40 samples
                        40 * memory.sample_working_bytes(trainer.cfg) + 1)
    assert memory.sample_batch(trainer.cfg, 100) == 40
    backend.manual_seed(7)
    one, _ = trainer.sample(40)                                 # the oracle: one call
    backend.manual_seed(7)
    x, path = cli_common.sample_in_batches(trainer, 100, 7, frames=3)
    assert x.shape == (100, 2) and np.array_equal(x[:40], one)
    assert not np.allclose(x[40:80], x[:40]) and not np.allclose(x[80:], x[40:60])
    assert [p.shape for _, p in path] == [(100, 2)] * len(path)
    assert np.array_equal(path[-1][1], x)                       # the last state is x_0
    main(["sample", "--run", str(run2d), "--n", "100", "--seed", "7", "--out",
          str(tmp_path / "s.png")])
    assert "100 samples" in capsys.readouterr().out and (tmp_path / "s.png").exists()


def test_distances_of_many_samples_use_the_first_2000(run2d, monkeypatch, tmp_path, capsys):
    # MMD holds n x n kernels: at --n 100000 the old code asked for 74.5 GiB after sampling
    from minidiff import cli
    seen, real = [], cli.distances_2d

    def spy(x, cfg):
        seen.append(len(x))
        return real(x, cfg)
    monkeypatch.setattr(cli, "distances_2d", spy)
    main(["sample", "--run", str(run2d), "--n", "2500", "--out", str(tmp_path / "s.png")])
    assert seen == [2000]
    assert capsys.readouterr().out.splitlines()[-1].startswith("the first 2000 samples: ")


def test_an_image_run_refuses_a_batch_that_does_not_fit(photos, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    main(["train", "--data", "folder", "--data-path", str(photos), "--model", "tiny",
          "--image-size", "16", "--timesteps", "21", "--steps", "1", "--batch-size", "2",
          "--n-samples", "2", "--quiet", "--out-dir", str(run)])
    capsys.readouterr()
    monkeypatch.setattr("minidiff.memory.available_bytes", lambda: 1 << 20)
    line = refused_quickly(["sample", "--run", str(run), "--n", "64"], capsys)
    assert line.startswith("minidiff: error: --n 64 needs about ") and "1 MiB are free" in line
    line = refused_quickly(["nll", "--run", str(run), "--data-path", str(photos),
                            "--batch-size", "4"], capsys)
    assert line.startswith("minidiff: error: --batch-size 4 on 4 images (--n) at T = 21 "
                           "needs about "), line

# ------------------------------------------------------------------------------ the estimates


@pytest.mark.parametrize("preset, c, size, learn_sigma", [
    ("tiny", 1, 16, False), ("tiny", 3, 64, True), ("small", 3, 32, False),
    ("cifar10", 3, 32, True)])
def test_the_parameter_count_is_the_models(preset, c, size, learn_sigma):
    from minidiff.memory import unet_params
    from minidiff.models import unet_from_preset
    model = unet_from_preset(preset, in_channels=c, image_size=size, learn_sigma=learn_sigma)
    assert unet_params(preset, c, size, learn_sigma) == \
        sum(p.data.size for p in model.parameters())


def test_the_mlps_parameter_count_is_the_models():
    from minidiff.memory import mlp_params, mlp_widths
    from minidiff.models import MLPDenoiser
    cfg = TrainConfig(hidden=24, depth=3, time_dim=8, fourier_levels=2,
                      variance="learned_range", loss="hybrid")
    model = MLPDenoiser(data_dim=2, time_dim=8, hidden=24, depth=3, learn_sigma=True,
                        fourier_levels=2)
    assert mlp_params(mlp_widths(cfg, 2)) == sum(p.data.size for p in model.parameters())


@pytest.mark.parametrize("preset, size", [("tiny", 32), ("small", 32), ("cifar10", 32)])
def test_the_attention_blocks_are_where_the_model_runs_them(preset, size, monkeypatch):
    """The oracle: the N of every attention the U-Net's forward pass really computes."""
    from minidiff.memory import largest_attention, unet_blocks
    from minidiff.models import unet, unet_from_preset
    seen, real = [], unet.attention

    def spy(q, k, v):
        seen.append(q.shape[2])                                 # q (B, C, N)
        return real(q, k, v)
    monkeypatch.setattr(unet, "attention", spy)
    model = unet_from_preset(preset, in_channels=1, image_size=size)
    model(np.zeros((1, 1, size, size), np.float32), np.zeros(1, np.int64))
    blocks, _ = unet_blocks(preset, 1, size)
    assert [res * res for kind, _, _, res in blocks if kind == "attn"] == seen
    assert largest_attention(blocks) == max(seen) ** 2


MEASURE = """
import os, sys
import numpy as np
from PIL import Image
from minidiff import memory
from minidiff.config import TrainConfig
from minidiff.train import Trainer
model, size, batch, tmp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if model == "mlp":
    cfg = TrainConfig(hidden=size, batch_size=batch, n_points=1000, timesteps=21,
                      out_dir=os.path.join(tmp, "run"))
else:
    for i in range(2):
        Image.new("L", (size, size), 40 * i).save(os.path.join(tmp, f"{i}.png"))
    cfg = TrainConfig(data="folder", data_path=tmp, model=model, image_size=size,
                      batch_size=batch, timesteps=21, out_dir=os.path.join(tmp, "run"))
def peak():              # the kernel's high-water mark of this process's resident memory
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
base = peak()
trainer = Trainer(cfg, quiet=True)
trainer.train_step(), trainer.train_step()
terms = memory.train_step_bytes(cfg)          # the step's, not the sample picture's
print(peak() - base, sum(v for k, v in terms.items() if not k.startswith("--n-samples")))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM in /proc")
@pytest.mark.parametrize("model, size, batch", [("mlp", 256, 4096), ("tiny", 16, 32),
                                                ("tiny", 64, 2)])
def test_the_training_estimate_is_within_2x_of_the_measured_peak(model, size, batch,
                                                                 tmp_path):
    """The oracle: the peak resident memory (VmHWM) of a process that takes two training
    steps, less its peak before building the trainer. (Not ru_maxrss: a child inherits its
    parent's across exec, and pytest's is bigger.) The three configs are led by the MLP's
    activations, the U-Net's activations, and its attention at 32 x 32."""
    r = subprocess.run([sys.executable, "-c", MEASURE, model, str(size), str(batch),
                        str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    measured, estimate = (int(v) for v in r.stdout.split())
    assert measured / 2 <= estimate <= 2 * measured, (measured, estimate)

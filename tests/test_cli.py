"""The command line: every flag documented, bad values refused by name, the commands work."""
import argparse
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minidiff.cli import build_parser, main
from minidiff.cli_common import fill_config
from minidiff.config import TrainConfig


# Small matrices run fastest on one BLAS thread (see minidiff.cli_common.limit_blas_threads).
pytestmark = pytest.mark.usefixtures("one_blas_thread")


REPO = Path(__file__).resolve().parents[1]

# What each command must offer (besides --help), written out here as the independent oracle;
# `train` also has one flag per TrainConfig field.
EXPECTED_FLAGS = {
    "train": {"--resume", "--overwrite", "--quiet", "--device", "--threads", "--rank-timeout",
              "--check-every", "--config", "--no-flip"}
    | {"--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)},
    "sample": {"--run", "--pretrained", "--data-path", "--sampler", "--variance", "--ddim-steps",
               "--eta", "--euler-steps", "--n", "--no-ema", "--gif", "--frames", "--out", "--seed",
               "--device", "--threads"},
    "nll": {"--run", "--pretrained", "--data", "--data-path", "--n", "--batch-size", "--no-ema",
            "--seed", "--device", "--threads"},
    "demo": {"--out-dir", "--steps", "--timesteps", "--n", "--seed", "--device", "--threads"},
    "export": {"--run", "--to", "--no-ema", "--device", "--threads"},
}


def test_train_flags_offer_exactly_the_config_fields_choices_and_the_registries():
    by_flag = {a.option_strings[0]: a for a in subparser("train")._actions if a.option_strings}
    registries = {   # written out here, the independent oracle
        "objective": {"ddpm", "flow"},
        "schedule": {"linear", "quadratic", "sigmoid", "constant", "cosine"},
        "parameterization": {"eps", "x0", "mu", "v"},
        "loss": {"simple", "mu_mse", "kl", "hybrid"},
        "variance": {"fixed_large", "fixed_small", "learned_range"},
        "model": {"mlp", "tiny", "small", "cifar10"},
        "channels": {1, 3},
    }
    for f in dataclasses.fields(TrainConfig):
        action = by_flag["--" + f.name.replace("_", "-")]
        assert f.metadata["help"] and action.help.startswith(f.metadata["help"]), f.name
        if f.name in registries:
            assert set(action.choices) == registries[f.name] == set(f.metadata["choices"])
        if f.metadata["range"]:
            lo, hi = f.metadata["range"]
            assert action.type(str(lo)) == lo and action.type(str(hi)) == hi
            for bad in (str(lo - 1), str(hi + 1)):
                with pytest.raises(argparse.ArgumentTypeError):
                    action.type(bad)


def help_text(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())          # whitespace-normalised


def subparser(command):
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


@pytest.mark.parametrize("command", sorted(EXPECTED_FLAGS))
def test_help_documents_every_flag(command, capsys):
    text = help_text(command, capsys)
    p = subparser(command)
    flags = {s for a in p._actions for s in a.option_strings if s.startswith("--")} - {"--help"}
    assert flags == EXPECTED_FLAGS[command]
    for a in p._actions:
        if "--help" in a.option_strings:
            continue
        assert a.help and a.help != argparse.SUPPRESS and len(a.help) > 15, a.option_strings
        for s in a.option_strings:
            assert s in text, f"{s} missing from `minidiff {command} --help`"
        assert " ".join(a.help.split())[:40] in text      # its explanation is shown


def test_top_level_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("train", "sample", "nll", "demo"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command


@pytest.mark.parametrize("argv, flag, allowed", [
    (["train", "--device", "tpu"], "--device", "'cpu', 'cuda'"),
    (["train", "--steps", "0"], "--steps", "must be an int in [1, 1000000000], got '0'"),
    (["train", "--batch-size", "many"], "--batch-size", "must be an int in [1, 65536], got 'many'"),
    (["train", "--lr", "-1"], "--lr", "must be a number in (0, inf], got '-1'"),
    (["train", "--lr", "nan"], "--lr", "must be a number in (0, inf]"),
    (["train", "--ema-decay", "1"], "--ema-decay", "must be a number in [0, 1)"),
    (["train", "--data", "spiral"], "--data", "'swiss_roll', 'two_moons'"),
    (["train", "--parameterization", "score"], "--parameterization", "'eps', 'x0', 'mu', 'v'"),
    (["train", "--channels", "2"], "--channels", "1, 3"),
    (["train", "--loss", "mu_mse"], "--loss", "set parameterization='mu'"),
    (["train", "--data", "rings", "--model", "tiny"], "--model", "needs model 'mlp'"),
    (["train", "--timesteps", "10"], "--timesteps", "needs T >= 21"),
    (["sample", "--run", "r", "--sampler", "heun"], "--sampler", "'ancestral', 'ddim', 'euler'"),
    (["sample", "--run", "r", "--euler-steps", "0"], "--euler-steps",
     "must be an int in [1, 100000]"),
    (["train", "--objective", "rectified"], "--objective", "'ddpm', 'flow'"),
    (["sample", "--run", "r", "--variance", "learned"], "--variance",
     "'fixed_large', 'fixed_small'"),
    (["sample", "--run", "r", "--ddim-steps", "0"], "--ddim-steps",
     "must be an int in [1, 100000]"),
    (["sample", "--run", "r", "--eta", "-0.5"], "--eta", "must be a number in [0, inf]"),
    (["nll", "--run", "r", "--n", "0"], "--n", "must be an int in [1, 1000000000]"),
    (["demo", "--timesteps", "5"], "--timesteps", "must be an int in [21, 100000]"),
    (["sample"], "--run", "required"),
])
def test_bad_values_are_refused_naming_the_flag(argv, flag, allowed, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and allowed in err, err


def test_an_unknown_command_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench-everything"])
    assert e.value.code == 2
    assert "invalid choice: 'bench-everything'" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_cuda_without_cupy_fails_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--device", "cuda", "--out-dir", str(tmp_path / "r"), "--steps", "1"])
    assert e.value.code == 1
    assert "--device cuda: device 'cuda' needs CuPy" in capsys.readouterr().err


TINY = ["--data", "two_moons", "--n-points", "400", "--hidden", "32", "--depth", "2",
        "--time-dim", "16", "--timesteps", "30", "--batch-size", "32", "--n-samples", "40"]


@pytest.fixture
def tiny_run(tmp_path):
    out = tmp_path / "run"
    main(["train", *TINY, "--steps", "30", "--ckpt-every", "10", "--quiet", "--out-dir",
          str(out)])
    return out


def test_train_then_sample_writes_pictures_and_distances(tiny_run, tmp_path, capsys):
    for name in ("checkpoint.npz", "log.csv", "loss.png", "samples.png", "config.json"):
        assert (tiny_run / name).exists(), name
    main(["sample", "--run", str(tiny_run), "--n", "200", "--gif", "--frames", "5",
          "--out", str(tmp_path / "s.png")])
    out = capsys.readouterr().out
    assert (tmp_path / "s.png").exists() and (tmp_path / "s.gif").exists()
    assert re.search(r"sliced W1 [\d.]+ \(noise floor [\d.]+", out), out
    assert "MMD² " in out and "ancestral, 30 steps, fixed_large" in out and "EMA" in out
    main(["sample", "--run", str(tiny_run), "--n", "100", "--sampler", "ddim",
          "--ddim-steps", "5", "--no-ema", "--variance", "fixed_small",
          "--out", str(tmp_path / "d.png")])
    assert "DDIM, 5 steps" in capsys.readouterr().out and (tmp_path / "d.png").exists()


def test_sample_refuses_more_ddim_steps_than_t(tiny_run, capsys):
    with pytest.raises(SystemExit) as e:
        main(["sample", "--run", str(tiny_run), "--sampler", "ddim", "--ddim-steps", "31"])
    assert e.value.code == 2
    assert "--ddim-steps: must be at most the run's T = 30, got 31" in capsys.readouterr().err


def test_runtime_errors_name_the_flag(tiny_run, tmp_path, capsys):
    cases = [
        (["sample", "--run", str(tmp_path / "nowhere")], "--run"),
        (["nll", "--run", str(tiny_run)], "nll measures bits/dim of 8-bit images"),
        (["train", *TINY, "--steps", "5", "--out-dir", str(tiny_run)], "--resume"),
        (["train", *TINY, "--steps", "40", "--hidden", "64", "--resume", "--out-dir",
          str(tiny_run)], "hidden: checkpoint 32, now 64"),
    ]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    cases.append((["demo", "--out-dir", str(tmp_path / "mine")], "--out-dir"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 1, argv
        assert message in capsys.readouterr().err, argv
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"


def test_demo_says_how_long_it_will_take_then_draws_both_sets(tmp_path, capsys):
    from minidiff.demo import demo_estimate
    # closed form: 2 sets x (steps x seconds per step + T x n/2000 x seconds per reverse step)
    assert demo_estimate(12000, 1000, 2000) == pytest.approx((2 * (12000 * 0.0033 + 7.5),
                                                               2 * (12000 * 0.008 + 30.0)))
    out_dir = tmp_path / "demo"
    main(["demo", "--steps", "40", "--timesteps", "21", "--n", "60", "--out-dir", str(out_dir)])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    # each set's sampling (15-30 s at the demo's size) shows its bar: silent before 2026-12-07
    assert sum(line.startswith("sample: 100% 21/21 ") for line in err.splitlines()) == 2, err
    fastest, slowest = demo_estimate(40, 21, 60)
    assert lines[0] == (f"the demo trains and samples two 2-D sets: expect {fastest / 60:.1f} "
                        f"to {slowest / 60:.1f} minutes on 2 idle CPU cores")
    assert lines[1].startswith("== swiss_roll:")
    for name in ("demo.png", "swiss_roll/samples.png", "picture/samples.gif"):
        assert (out_dir / name).is_file(), name


def test_nll_prints_bits_per_dim_on_the_digits_test_split(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sklearn")
    out = tmp_path / "digits"
    main(["train", "--data", "digits", "--model", "tiny", "--timesteps", "21", "--steps", "4",
          "--batch-size", "2", "--n-samples", "2", "--quiet", "--out-dir", str(out)])
    main(["nll", "--run", str(out), "--n", "3", "--seed", "5"])
    text, err = capsys.readouterr()
    m = re.search(r"3 images of the digits test split, T = 21: NLL <= ([\d.]+) ± ([\d.]+) "
                  r"bits/dim", text)
    assert m, text
    # The oracle: the bound of the first 3 test digits, computed here directly with the
    # run's EMA weights and the same seed.
    from minidiff import backend, data
    from minidiff.diffusion import calc_bpd_loop
    from minidiff.train import Trainer
    t = Trainer.from_checkpoint(out)
    backend.manual_seed(5)
    with t.ema.swapped_in(t.model.eval()):
        bpd = calc_bpd_loop(t.diffusion, t.model, data.load_digits(split="test")[:3])
    assert float(m.group(1)) == pytest.approx(bpd["total_bpd"].mean(), abs=6e-4)
    assert 0 < float(m.group(1)) < 50
    assert "21/21 [" in err and "\r" not in err              # a log: whole lines, no redraw
    with monkeypatch.context() as mp:                       # a terminal: the bound's live bar
        mp.setattr(sys.stderr, "isatty", lambda: True)
        main(["nll", "--run", str(out), "--n", "3", "--seed", "5"])
    err = capsys.readouterr().err
    assert "21/21 [" in err and "\r" in err


def test_python_dash_m_minidiff_runs_the_cli():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "minidiff", "sample", "--help"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--ddim-steps" in r.stdout


@pytest.mark.parametrize("given, want", [([], True), (["--no-flip"], False), (["--flip"], True)])
def test_a_true_switch_in_a_config_file_can_be_turned_off_by_its_no_flag(tmp_path, given, want):
    (tmp_path / "config.json").write_text('{"flip": true, "lr": 0.002}')
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "config.json"),
                                      *given])
    fill_config(args)
    assert (args.flip, args.lr) == (want, 0.002)

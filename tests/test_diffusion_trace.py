"""One p_sample reads like Algorithm 2 (issue 21): traced with sys.setprofile, a call reaches
the network at most 3 calls deep and runs at most 8 distinct functions of minidiff/diffusion/,
from at most 2 files (Ho et al.'s diffusion_utils_2.py: 2 deep, 6 functions, 1 file).

The oracle is the interpreter's own record of the calls: every Python function entered while
p_sample runs, with the stack between p_sample and the network. docs/diffusion_core.md gives
the counts before and after the rewrite, measured the same way.
"""
import os
import sys

import numpy as np
import pytest

import minidiff
from minidiff.diffusion import GaussianDiffusion, get_beta_schedule

DIFFUSION = os.path.dirname(minidiff.diffusion.__file__) + os.sep
MAX_FUNCTIONS, MAX_FILES, MAX_DEPTH = 8, 2, 3


def trace(d, model, network, *args, **kwargs):
    """Run d.p_sample(model, *args, **kwargs) under sys.setprofile. Returns the distinct
    functions of minidiff/diffusion/ it entered, as (file, qualified name) in order, and for
    each call of the function `network` its depth: how many calls below p_sample it ran."""
    seen, stack, depths = [], [], []
    p_sample = GaussianDiffusion.p_sample.__code__

    def profile(frame, event, arg):
        if event == "call":
            code = frame.f_code
            stack.append(code)
            key = (os.path.basename(code.co_filename), code.co_qualname)
            if code.co_filename.startswith(DIFFUSION) and key not in seen:
                seen.append(key)
            if code is network.__code__:
                depths.append(len(stack) - 1 - stack.index(p_sample))
        elif event == "return":
            stack.pop()

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        d.p_sample(model, *args, **kwargs)
    finally:
        sys.setprofile(previous)
    return seen, depths


def model(x_t, t):
    """A stand-in network: ε, x0, μ or v, and for learned_range v in [-1, 1] too."""
    x = x_t.data
    out = np.tanh(x) * 0.1
    if x.shape[1] != 2:                                 # learned_range: 2C channels
        out = np.concatenate([out, np.sin(x)], axis=1)
    return out.astype(x.dtype)


@pytest.mark.parametrize("param", ["eps", "x0", "mu", "v"])
@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small", "learned_range"])
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("z_given", [False, True])
def test_one_p_sample_runs_few_functions_in_few_files_and_calls_the_network_shallowly(
        param, variance, clip, z_given):
    loss = "kl" if variance == "learned_range" else "simple"
    d = GaussianDiffusion(get_beta_schedule("linear", 10), parameterization=param,
                          variance=variance, loss=loss)
    C = 1 if variance == "learned_range" else 2          # the stand-in doubles a C of 1
    x = np.random.default_rng(0).standard_normal((3, C, 2, 2)).astype(np.float32)
    z = np.ones_like(x) if z_given else None
    seen, depths = trace(d, model, model, x, np.array([0, 4, 9]), clip_denoised=clip, z=z)
    names = "\n  ".join(f"{f}: {q}" for f, q in seen)
    assert depths and len(depths) == 1, f"the network ran {len(depths)} times, not once"
    assert ("gaussian_diffusion.py", "GaussianDiffusion.p_sample") in seen
    assert depths[0] <= MAX_DEPTH, f"the network is {depths[0]} calls below p_sample"
    assert len(seen) <= MAX_FUNCTIONS, f"{len(seen)} functions ran:\n  {names}"
    files = {f for f, _ in seen}
    assert len(files) <= MAX_FILES, f"{len(files)} files: {sorted(files)}"


def test_the_tracer_measures_depth_and_ignores_code_outside_the_package():
    """The tracer itself, on a case whose answer is known: the same network reached through
    two wrappers defined here runs 2 calls deeper, and the wrappers are no diffusion code."""
    d = GaussianDiffusion(get_beta_schedule("linear", 10))
    x = np.zeros((2, 2, 1, 1), dtype=np.float32)
    seen, direct = trace(d, model, model, x, 3)

    def inner(x_t, t):
        return model(x_t, t)

    def outer(x_t, t):
        return inner(x_t, t)
    seen_wrapped, wrapped = trace(d, outer, model, x, 3)
    assert len(direct) == 1 and wrapped == [direct[0] + 2]
    assert seen_wrapped == seen and all(f.endswith(".py") for f, _ in seen)


if __name__ == "__main__":          # the trace of one default p_sample, as docs/ reports it
    d = GaussianDiffusion(get_beta_schedule("linear", 10))
    seen, depths = trace(d, model, model, np.zeros((2, 2, 1, 1), np.float32), 3)
    files = sorted({f for f, _ in seen})
    print(f"{len(seen)} functions in {len(files)} files; the network {depths[0]} calls deep")
    for f, q in seen:
        print(f"  {f:24} {q}")

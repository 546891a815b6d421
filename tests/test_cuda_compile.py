"""Every kernels/*.cu compiles with NVRTC, the compiler CuPy uses, for every GPU generation we
support, with no spills and within the hardware's register and shared-memory budgets.

NVRTC runs from the pip packages `nvidia-cuda-nvrtc` and `cuda-bindings` (no driver, no GPU).
The options are minidiff.cuda.OPTIONS plus what CuPy adds (-ftz=true) and --ptxas-options=-v,
whose report (one block per kernel) is parsed:

    ptxas info    : Compiling entry function 'q_sample' for 'sm_80'
    ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
    ptxas info    : Used 17 registers, used 0 barriers, 128 bytes smem, 408 bytes cmem[0]
"""
import ast
import os
import re
from pathlib import Path

import pytest

from minidiff import cuda

ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")
CUPY_OPTIONS = ("-ftz=true",)                 # CuPy adds this to every RawModule
REGISTER_FILE = 65536                         # 32-bit registers per SM, sm_75 to sm_90
STATIC_SMEM_LIMIT = 48 * 1024                 # without cudaFuncSetAttribute opt-in
FILES = sorted(cuda.KERNELS)


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
        return nvrtc
    except ImportError as e:
        msg = f"needs NVRTC: pip install nvidia-cuda-nvrtc cuda-bindings ({e})"
        if os.environ.get("CI"):
            pytest.fail(msg)                  # CI must compile every kernel, never skip
        pytest.skip(msg)


def compile_log(filename, arch):
    """NVRTC's log (with ptxas' report) for one file and arch; fails on a compile error."""
    nvrtc = _nvrtc()
    src = cuda.source(filename).encode()
    err, prog = nvrtc.nvrtcCreateProgram(src, filename.encode(), 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
    opts = [o.encode() for o in (*cuda.OPTIONS, *CUPY_OPTIONS, f"--gpu-architecture={arch}",
                                 "--ptxas-options=-v")]
    try:
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        log = log.decode(errors="replace").rstrip("\x00 ")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, f"{filename} for {arch}:\n{log}"
    return log


def ptxas_report(log):
    """{kernel: {"regs", "smem", "spill_stores", "spill_loads", "stack"}} from the log."""
    out, cur = {}, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            cur = out.setdefault(m.group(1), {"smem": 0})
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                      r"loads", line)
        if m:
            cur.update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                       spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["regs"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            cur["smem"] = int(s.group(1)) if s else 0
    return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", FILES)
def test_kernel_compiles_without_spills_within_budgets(filename, arch):
    log = compile_log(filename, arch)
    assert "warning" not in log.lower(), f"{filename} for {arch}: NVRTC warns:\n{log}"
    report = ptxas_report(log)
    assert set(report) == set(cuda.KERNELS[filename]), (
        f"{filename} for {arch}: compiled {sorted(report)}, but minidiff.cuda launches "
        f"{sorted(cuda.KERNELS[filename])}")
    for name, r in report.items():
        where = f"{filename}:{name} for {arch} ({r})"
        assert {"regs", "spill_stores", "spill_loads"} <= set(r), f"unparsed report: {where}"
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, f"spills: {where}"
        assert r["regs"] * cuda.LARGEST_BLOCK <= REGISTER_FILE, \
            f"{r['regs']} registers x {cuda.LARGEST_BLOCK} threads > {REGISTER_FILE}: {where}"
        assert r["smem"] <= STATIC_SMEM_LIMIT, f"static shared memory > 48 KiB: {where}"


def test_sources_need_no_headers():
    """NVRTC has no standard library on its include path (<cstdint> fails; CuPy supplies
    <cuda/std/...> itself): the kernel files include nothing, so they compile anywhere."""
    for f in FILES:
        assert not re.search(r"^\s*#\s*include", cuda.source(f), re.M), f"{f} includes a header"


def test_every_kernel_file_is_registered():
    on_disk = sorted(p.name for p in Path(cuda.kernel_dir()).glob("*.cu"))
    assert on_disk == FILES


def test_launch_calls_name_exactly_the_registered_kernels():
    """Every _launch("file.cu", "name", ...) in minidiff/cuda.py, read from its syntax tree,
    names a registered kernel, and every registered kernel is launched somewhere."""
    tree = ast.parse(Path(cuda.__file__).read_text())
    launched = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_launch":
            f, k = node.args[:2]
            assert isinstance(f, ast.Constant) and isinstance(k, ast.Constant), \
                f"line {node.lineno}: _launch must name its file and kernel literally"
            launched.add((f.value, k.value))
    registered = {(f, k) for f, ks in cuda.KERNELS.items() for k in ks}
    assert launched == registered, (f"launched, not registered: {launched - registered}; "
                                    f"registered, never launched: {registered - launched}")


def test_lines_are_at_most_100_characters():
    for f in FILES:
        for i, line in enumerate(cuda.source(f).splitlines(), 1):
            assert len(line) <= 100, f"{f}:{i} has {len(line)} characters"

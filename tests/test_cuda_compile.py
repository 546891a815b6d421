"""Every kernels/*.cu compiles with NVRTC, the compiler CuPy uses, for every GPU generation we
support, with no spills and within the hardware's register and shared-memory budgets.

NVRTC comes from pip wheels (no driver, no GPU), each major version a library of its own, so
both install side by side:

    nvidia-cuda-nvrtc-cu12   nvidia/cuda_nvrtc/lib/libnvrtc.so.12   what cupy-cuda12x users run
    nvidia-cuda-nvrtc        nvidia/cu13/lib/libnvrtc.so.13         CUDA 13

Every one found is tested. Its C API (nvrtc.h) is called through ctypes: the Python package
cuda-bindings could reach only one of them, as its 12.x and 13.x releases are one package.
The options are minidiff.cuda.OPTIONS plus what CuPy adds (-ftz=true) and --ptxas-options=-v,
whose report (one block per kernel) is parsed:

    ptxas info    : Compiling entry function 'q_sample' for 'sm_80'
    ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
    ptxas info    : Used 17 registers, used 0 barriers, 128 bytes smem, 408 bytes cmem[0]
"""
import ast
import ctypes
import os
import re
import sys
from pathlib import Path

import pytest

from minidiff import cuda

ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")
CUPY_OPTIONS = ("-ftz=true",)                 # CuPy adds this to every RawModule
REGISTER_FILE = 65536                         # 32-bit registers per SM, sm_75 to sm_90
STATIC_SMEM_LIMIT = 48 * 1024                 # without cudaFuncSetAttribute opt-in
FILES = sorted(cuda.KERNELS)
MODULES = sorted(Path(cuda.__file__).parent.glob("*.py"))     # minidiff/cuda/*.py
CI_MAJORS = (12, 13)                          # CI compiles with both
INSTALL = "pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-nvrtc"


def nvrtc_libraries():
    """{major version: path} of every libnvrtc.so.<major> a pip wheel put on sys.path."""
    found = {}
    for entry in sys.path:
        for lib in sorted(Path(entry or ".").glob("nvidia/*/lib/libnvrtc.so.*")):
            m = re.fullmatch(r"libnvrtc\.so\.(\d+)", lib.name)
            if m:
                found.setdefault(int(m.group(1)), lib)
    return found


LIBRARIES = nvrtc_libraries()


def _missing(msg):
    if os.environ.get("CI"):
        pytest.fail(msg)                      # CI must compile every kernel, never skip
    pytest.skip(msg)


class NVRTC:
    """One NVRTC library: the five calls of nvrtc.h that a compile and its log need."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)))
        self.version = f"{major.value}.{minor.value}"

    def _check(self, result):
        assert result == 0, self.lib.nvrtcGetErrorString(result).decode()

    def compile(self, source, name, options):
        """(NVRTC's result code, its log) for one source; 0 is NVRTC_SUCCESS."""
        prog = ctypes.c_void_p()                                  # nvrtcProgram
        self._check(self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(),
                                                name.encode(), 0, None, None))
        try:
            opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            result = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self._check(self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)))
            log = ctypes.create_string_buffer(size.value)
            self._check(self.lib.nvrtcGetProgramLog(prog, log))
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))
        return result, log.value.decode(errors="replace")


_compilers = {}


def nvrtc(major):
    """The NVRTC of this major version, loaded once; skips (fails in CI) without one."""
    if major is None:
        _missing(f"needs NVRTC: {INSTALL}")
    if major not in _compilers:
        _compilers[major] = NVRTC(LIBRARIES[major])
    return _compilers[major]


def compile_log(filename, arch, major):
    """NVRTC's log (with ptxas' report) for one file and arch; fails on a compile error."""
    compiler = nvrtc(major)
    opts = (*cuda.OPTIONS, *CUPY_OPTIONS, f"--gpu-architecture={arch}", "--ptxas-options=-v")
    result, log = compiler.compile(cuda.source(filename), filename, opts)
    assert result == 0, f"{filename} for {arch}, NVRTC {compiler.version}:\n{log}"
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


@pytest.mark.parametrize("major", sorted(LIBRARIES) or [None],
                         ids=lambda m: f"nvrtc{m}" if m else "no-nvrtc")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", FILES)
def test_kernel_compiles_without_spills_within_budgets(filename, arch, major):
    log = compile_log(filename, arch, major)
    where_all = f"{filename} for {arch}, NVRTC {nvrtc(major).version}"
    assert "warning" not in log.lower(), f"{where_all}: NVRTC warns:\n{log}"
    report = ptxas_report(log)
    assert set(report) == set(cuda.KERNELS[filename]), (
        f"{where_all}: compiled {sorted(report)}, but minidiff.cuda launches "
        f"{sorted(cuda.KERNELS[filename])}")
    for name, r in report.items():
        where = f"{filename}:{name} for {arch}, NVRTC {nvrtc(major).version} ({r})"
        assert {"regs", "spill_stores", "spill_loads"} <= set(r), f"unparsed report: {where}"
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, f"spills: {where}"
        assert r["regs"] * cuda.LARGEST_BLOCK <= REGISTER_FILE, \
            f"{r['regs']} registers x {cuda.LARGEST_BLOCK} threads > {REGISTER_FILE}: {where}"
        assert r["smem"] <= STATIC_SMEM_LIMIT, f"static shared memory > 48 KiB: {where}"


def test_ci_compiles_with_nvrtc_12_and_13():
    """cupy-cuda12x runs NVRTC 12, CUDA 13 brings NVRTC 13: CI must have both wheels."""
    missing = [m for m in CI_MAJORS if m not in LIBRARIES]
    if missing:
        _missing(f"no NVRTC {missing} (found {sorted(LIBRARIES)}): {INSTALL}")


def test_sources_need_no_headers():
    """NVRTC has no standard library on its include path (<cstdint> fails; CuPy supplies
    <cuda/std/...> itself): the kernel files include nothing, so they compile anywhere."""
    for f in FILES:
        assert not re.search(r"^\s*#\s*include", cuda.source(f), re.M), f"{f} includes a header"


def test_every_kernel_file_is_registered():
    on_disk = sorted(p.name for p in Path(cuda.kernel_dir()).glob("*.cu"))
    assert on_disk == FILES


def launch_calls(path):
    """Every `_core._launch(...)` (or bare `_launch(...)`) call in one module's syntax tree."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name == "_launch":
                yield node


def test_launch_calls_name_exactly_the_registered_kernels():
    """Every _launch("file.cu", "name", ...) in minidiff/cuda/, read from the syntax trees,
    names a registered kernel from the module of its topic (file.cu from file.py), and every
    registered kernel is launched somewhere."""
    launched = set()
    for path in MODULES:
        for node in launch_calls(path):
            where = f"{path.name}:{node.lineno}"
            f, k = node.args[:2]
            assert isinstance(f, ast.Constant) and isinstance(k, ast.Constant), \
                f"{where}: _launch must name its file and kernel literally"
            assert f.value == f"{path.stem}.cu", \
                f"{where}: launches {k.value!r} of {f.value}, which belongs in {f.value[:-3]}.py"
            launched.add((f.value, k.value))
    registered = {(f, k) for f, ks in cuda.KERNELS.items() for k in ks}
    assert launched == registered, (f"launched, not registered: {launched - registered}; "
                                    f"registered, never launched: {registered - launched}")


def test_lines_are_at_most_100_characters_and_modules_at_most_400_lines():
    for f in FILES:
        for i, line in enumerate(cuda.source(f).splitlines(), 1):
            assert len(line) <= 100, f"{f}:{i} has {len(line)} characters"
    for path in MODULES:
        lines = path.read_text().splitlines()
        assert len(lines) <= 400, f"minidiff/cuda/{path.name} has {len(lines)} lines"
        for i, line in enumerate(lines, 1):
            assert len(line) <= 100, f"minidiff/cuda/{path.name}:{i} has {len(line)} characters"

"""`minidiff gpu-check`: runs examples/gpu_check.py, the one command a GPU machine runs first.

The check lives with the examples because it drives the test suite and the GPU benchmark,
which are not installed with the package: it runs from a source checkout.
"""
import importlib.util
import os

from .cli_common import fail

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "examples", "gpu_check.py")


def _script():
    """examples/gpu_check.py as a module, or None outside a source checkout."""
    if not os.path.isfile(SCRIPT):
        return None
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cmd_gpu_check(args):
    status = args.check.run(args) if args.check else None
    if status is None:
        fail(f"gpu-check runs from a source checkout ({SCRIPT} is not here): clone the "
                 "repository and run `python -m minidiff gpu-check` there")
    if status:
        raise SystemExit(status)


def add_parser(sub):
    p = sub.add_parser("gpu-check", help="check and time the GPU path; writes gpu_report.*",
                       description="Environment, correctness on the device (or, with "
                       "--emulate, on the g++ CUDA emulator) and speed of the GPU path; "
                       "writes gpu_report.json and gpu_report.md (examples/gpu_check.py).")
    check = _script()
    if check:
        check.add_arguments(p)
    p.set_defaults(func=cmd_gpu_check, parser=p, check=check)
    return p

"""`mpiexec -n N minidiff train ...`: which world this process is in, and what the command
line does differently with N ranks.

    init()                             joins the ranks the launcher started (one process:
                                       World); world() is it from then on
    data_parallel(parser, cmd_train)   adds --rank-timeout and --check-every; returns the
                                       command, run as one of N ranks when launched so
    report("minidiff: error: ...")     one failure line; with N ranks, then the whole job ends

A rank learns N from its launcher's environment (MPICH's and Intel MPI's PMI, Open MPI,
MVAPICH, srun), so plain `minidiff train` never imports mpi4py. Each rank takes its share of
the node's cores: pinned to them, and as many BLAS threads (1 for the 2-D MLP). Ranks 1..N-1
are quiet: progress, messages and files come from rank 0.
"""
import os
import sys
import time

from .ranks import World

SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
GRACE_S = 2.0         # a failing rank > 0 waits this long, so that rank 0's line comes first
FORWARD_S = 1.0          # seconds between a failing rank's last line and its MPI_Abort


_world = [World()]


def world():
    """This process's World: one process unless init() found N > 1 ranks."""
    return _world[0]


def writes():
    """Whether this process keeps the run folder: one process, or rank 0 of N."""
    return _world[0].writer


def init(timeout=None, check_every=None):
    """Join the ranks mpiexec or srun started (one process: nothing to join). Returns the
    World, which the Trainer's hooks use from then on."""
    if launched_size() > 1 and _world[0].size == 1:
        from .mpi import MPIWorld                    # mpi4py: imported by N ranks only
        w = MPIWorld()
        if w.size != launched_size():
            raise RuntimeError(f"the launcher started {launched_size()} ranks but MPI sees "
                               f"{w.size}: mpi4py's MPI is not the launcher's; use the "
                               "mpiexec of the MPI that mpi4py was built with")
        _world[0] = w
    w = _world[0]
    if timeout is not None:
        w.timeout = float(timeout)
    if check_every is not None:
        w.check_every = int(check_every)
    return w


def launched_size():
    """How many ranks the launcher started (1 when started by hand)."""
    for name in SIZE_VARS:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def data_parallel(parser, command):
    """Add the flags of a run over N ranks to `parser`; return `command` wrapped so that,
    launched as N ranks, each rank joins the others first (one process: unchanged)."""
    parser.add_argument("--rank-timeout", type=_seconds, default=300.0, metavar="SECONDS",
                        help="with N ranks (mpiexec -n N): how long a rank waits for the "
                             "others before it stops the run with a message; longer than "
                             "rank 0 takes to write a checkpoint (default: 300)")
    parser.add_argument("--check-every", type=_positive_int, default=100, metavar="K",
                        help="with N ranks: every K steps, check that all ranks hold the same "
                             "weights, and stop if they drifted (default: 100)")

    def run(args):
        w = init(timeout=args.rank_timeout, check_every=args.check_every)
        if w.size > 1:
            args.quiet = args.quiet or not w.writer
            share = pin_to_share(w.local_rank, w.local_size)
            if args.threads is None:
                args.threads = 1 if args.model == "mlp" else share
        return command(args)
    return run


def pin_to_share(local_rank, local_size):
    """Pin this process to its share of the cores the launcher gave the node's ranks (left
    as it is when the launcher bound each rank already). Returns how many cores it has."""
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < (os.cpu_count() or len(mine)):       # bound by the launcher: keep it
        return len(mine)
    share = max(1, len(mine) // local_size)
    first = (local_rank * share) % len(mine)
    cores = mine[first:first + share]
    os.sched_setaffinity(0, cores)
    return len(cores)


def report(line):
    """Print a failure line. With N ranks, end every rank of the job at once: a rank whose
    peer failed would otherwise wait, in a collective, until the timeout."""
    w = world()
    if w.size == 1:
        print(line, file=sys.stderr)
        return
    if not w.writer:
        time.sleep(GRACE_S)                   # if rank 0 fails too, its line ends the job
        if "rank " not in line:
            line = line.replace("error: ", f"error: rank {w.rank} of {w.size}: ", 1)
    print(line, file=sys.stderr, flush=True)
    time.sleep(FORWARD_S)                     # let the launcher pass the line on: the abort
    w.abort(1)                                # kills the process that forwards our output


def _seconds(s):
    import argparse
    try:
        v = float(s)
    except ValueError:
        v = -1.0
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {s!r:.40}")
    return v


def _positive_int(s):
    import argparse
    if not s.isdigit() or int(s) < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {s!r:.40}")
    return int(s)

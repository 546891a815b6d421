"""`python -m minidiff train | sample | nll | demo`: the same as the `minidiff` command."""
import sys

from .cli import main

sys.exit(main())

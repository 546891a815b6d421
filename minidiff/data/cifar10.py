"""CIFAR-10, the data of Ho et al. 2020's Table 1, from its official binary version.

    x = load_cifar10("cifar-10-batches-bin", "test")        # (10000, 3, 32, 32) in [-1, 1]

The binary version (cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html)
unpacks to cifar-10-batches-bin/: data_batch_1.bin … data_batch_5.bin (the 50000 training
images) and test_batch.bin (the 10000 test images). Each file is a run of 3073-byte records:
one label byte, then 1024 red, 1024 green and 1024 blue bytes, each 32 rows of 32 (so a record
is CHW already). A file's length is checked to be a whole number of records before it is read.

The python version (cifar-10-batches-py/) is pickled, and unpickling a file can run any code:
it is refused, with a pointer to the binary version.
"""
import os

import numpy as np

from ._common import from_uint8

RECORD = 1 + 3 * 32 * 32                        # label byte + 3072 pixel bytes
SPLITS = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
          "test": ("test_batch.bin",)}
BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


def cifar10_folder(path):
    """The cifar-10-batches-bin folder: path itself, or the folder of that name inside it."""
    if not os.path.isdir(path):
        raise ValueError(f"{path}: not a folder (give cifar-10-batches-bin/, from {BINARY_URL})")
    for folder in (path, os.path.join(path, "cifar-10-batches-bin")):
        if os.path.isfile(os.path.join(folder, "test_batch.bin")):
            return folder
    for folder in (path, os.path.join(path, "cifar-10-batches-py")):
        if os.path.isfile(os.path.join(folder, "test_batch")):
            raise ValueError(f"{folder}: CIFAR-10's python version, which is pickled (minidiff "
                             f"never unpickles); use the binary version instead: {BINARY_URL} "
                             "unpacks to cifar-10-batches-bin/")
    raise ValueError(f"{path}: no test_batch.bin here or in cifar-10-batches-bin/ (CIFAR-10's "
                     f"binary version: {BINARY_URL})")


def read_batch(file):
    """One binary batch file -> uint8 images (N, 3, 32, 32); its size checked first."""
    size = os.path.getsize(file)
    if size == 0 or size % RECORD:
        raise ValueError(f"{file}: {size} bytes is not a whole number of {RECORD}-byte CIFAR-10 "
                         "records (1 label byte + 3072 pixel bytes)")
    records = np.fromfile(file, dtype=np.uint8).reshape(size // RECORD, RECORD)   # (N, 3073)
    return records[:, 1:].reshape(-1, 3, 32, 32)                # drop the label: (N, 3, 32, 32)


def load_cifar10(path, split="train"):
    """The training (50000) or test (10000) images as NCHW float32 in [-1, 1]."""
    if split not in SPLITS:
        raise ValueError(f"load_cifar10: split must be one of {tuple(SPLITS)}, got {split!r}")
    folder = cifar10_folder(path)
    files = [os.path.join(folder, name) for name in SPLITS[split]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise ValueError(f"{missing[0]}: missing (the {split} split is "
                         f"{', '.join(SPLITS[split])})")
    return from_uint8(np.concatenate([read_batch(f) for f in files]))   # (N, 3, 32, 32)

"""--data cifar10: CIFAR-10's binary version, written here in its format (records of 1 label byte
and 3072 pixel bytes, R then G then B planes of 32 x 32), read back pixel for pixel; the
pickled python version and files of the wrong length are refused in one line."""
import numpy as np
import pytest

from minidiff import data
from minidiff.config import TrainConfig
from minidiff.datakinds import DATA_KINDS
from minidiff.train import Trainer


def write_batch(path, images, labels):
    """images (N, 32, 32, 3) uint8 (HWC, as a picture is held) -> the binary record format."""
    with open(path, "wb") as f:
        for img, label in zip(images, labels):
            f.write(bytes([label]))
            for c in range(3):                                  # one plane per colour
                f.write(img[:, :, c].tobytes())


def make_cifar(root, n_train=2, n_test=3, seed=0):
    """A cifar-10-batches-bin folder: 5 training files of n_train images, a test file."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    images = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        n = n_test if name == "test_batch.bin" else n_train
        images[name] = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        write_batch(folder / name, images[name], rng.integers(0, 10, n))
    return folder, images


def as_minus1_1(hwc):
    return np.transpose(hwc, (0, 3, 1, 2)).astype(np.float64) / 127.5 - 1     # (N, 3, 32, 32)


@pytest.mark.parametrize("given", ["folder", "parent"])
def test_the_binary_format_reads_back_pixel_for_pixel(tmp_path, given):
    folder, images = make_cifar(tmp_path)
    path = folder if given == "folder" else tmp_path
    train = data.load_cifar10(path, "train")
    test = data.load_cifar10(path, "test")
    expected = np.concatenate([images[f"data_batch_{i}.bin"] for i in range(1, 6)])
    assert train.dtype == np.float32 and train.shape == (10, 3, 32, 32)
    np.testing.assert_allclose(train, as_minus1_1(expected), atol=1e-6)
    np.testing.assert_allclose(test, as_minus1_1(images["test_batch.bin"]), atol=1e-6)


def test_the_pickled_python_version_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"\x80\x04 a pickle")
    for path in (tmp_path, folder):
        with pytest.raises(ValueError) as info:
            data.load_cifar10(path, "test")
        msg = str(info.value)
        assert "\n" not in msg and "pickled" in msg and "cifar-10-binary.tar.gz" in msg, msg


def test_a_file_that_is_not_whole_records_is_refused_before_reading(tmp_path):
    folder, _ = make_cifar(tmp_path)
    with open(folder / "test_batch.bin", "ab") as f:
        f.write(b"\x00" * 100)                                   # 3 records and 100 bytes
    with pytest.raises(ValueError, match=r"9319 bytes is not a whole number of 3073-byte"):
        data.load_cifar10(folder, "test")


def test_a_missing_training_file_is_named(tmp_path):
    folder, _ = make_cifar(tmp_path)
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(ValueError, match=r"data_batch_4.bin: missing"):
        data.load_cifar10(folder, "train")


def test_cifar10_trains_and_holds_out_the_test_batch(tmp_path):
    folder, images = make_cifar(tmp_path)
    kind = DATA_KINDS["cifar10"]
    cfg = TrainConfig(data="cifar10", data_path=str(folder), model="tiny", steps=1,
                      batch_size=2, out_dir=str(tmp_path / "run"), n_samples=2,
                      timesteps=50, schedule="linear").validate()
    assert kind.images and kind.shape(cfg) == (3, 32, 32)
    x, source = kind.heldout(cfg, "")
    np.testing.assert_allclose(x, as_minus1_1(images["test_batch.bin"]), atol=1e-6)
    trainer = Trainer(cfg, quiet=True)
    trainer.run(final_samples=False)
    assert trainer.step == 1 and trainer.shape == (3, 32, 32)

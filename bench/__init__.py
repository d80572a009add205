"""The benchmark harness (`python -m bench`); see bench/__main__.py."""

import os

# One BLAS thread: the harness shares two cores with the systems it measures, and OpenBLAS's
# spinning worker threads would steal them (and stall for minutes when the machine is busy).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

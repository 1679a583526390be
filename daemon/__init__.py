"""The ovembed daemon: its HTTP edge, inference and command line.

numpy's BLAS would start a thread per core, spinning between products, and those threads compete with
OpenVINO's streams for the same cores; the inference slots already run in parallel, so each numpy product
(Dense layers, heads) runs on its slot's thread. Set before any module imports numpy; a value given in the
environment wins. Measured with ColBERT vectors on all-MiniLM (2 cores): 20 % of the throughput lost with
the BLAS threads, 4 % without.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

"""normlab: does batch norm make the cost contours rounder once inputs are normalized?

Importing normlab enables JAX's float64 support (``jax_enable_x64``) so that the analysis can run in
float64 where it needs to; every normlab function takes its dtype explicitly, so training stays in
float32 unless the config says otherwise.
"""

import os
import sys

if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_enable_x64", True)
else:
    # read by JAX when it is first imported; importing normlab itself stays light (the workflow imports
    # normlab.variants in every Snakemake process, which never needs JAX)
    os.environ["JAX_ENABLE_X64"] = "1"

__version__ = "0.1.0"

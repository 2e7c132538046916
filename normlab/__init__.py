"""normlab: does batch norm make the cost contours rounder once inputs are normalized?

Importing normlab enables JAX's float64 support (``jax_enable_x64``) so that the analysis can run in
float64 where it needs to; every normlab function takes its dtype explicitly, so training stays in
float32 unless the config says otherwise.
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"

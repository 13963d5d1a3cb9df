"""The one compiled part: the boosted trees of the DCI on the CPU (wscrl_jax/eval/_gbrt_native.c,
loaded with ctypes by wscrl_jax/eval/gbrt_native.py). Optional: where it does not build (no C
compiler), the install goes on and the DCI uses its JAX trees instead."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "wscrl_jax.eval._gbrt_native", ["wscrl_jax/eval/_gbrt_native.c"],
    # the IEEE operations as written (no fused multiply-adds), vectorisable selects
    extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math"],
    optional=True)])

"""Build the one C extension: the pickle opcode scanner that vets a stream before unpickling."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "amber.security._pickle_scan",
            sources=["amber/security/_pickle_scan.c"],
            extra_compile_args=["-O2", "-std=c99"],
        )
    ]
)

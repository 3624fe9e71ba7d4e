"""Build the C extensions: the pickle opcode scanner that vets a stream before unpickling, the
checks of boosted-tree model files before their frameworks parse them, the pass that drops the
memo stores a saved pickle stream never reads back, the early write-back that lets a durable
save's copy and fsync overlap, and the decoder of decision trees' node arrays stored as planes."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "amber.security._pickle_scan",
            sources=["amber/security/_pickle_scan.c"],
            extra_compile_args=["-O2", "-std=c99"],
        ),
        Extension(
            "amber.handlers._treecheck",
            sources=["amber/handlers/_treecheck.c"],
            # -O3: its scans of model text vectorise (a third of the time at -O2)
            extra_compile_args=["-O3", "-std=c99"],
        ),
        Extension(
            "amber.handlers._prune_memo",
            sources=["amber/handlers/_prune_memo.c"],
            extra_compile_args=["-O2", "-std=c99"],
        ),
        Extension(
            "amber.artifact._writeback",
            sources=["amber/artifact/_writeback.c"],
            extra_compile_args=["-O2", "-std=gnu99"],
        ),
        Extension(
            "amber.artifact._nodes",
            sources=["amber/artifact/_nodes.c"],
            extra_compile_args=["-O3", "-std=c99"],
        ),
    ]
)

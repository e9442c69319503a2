"""The optional C extension (pymapreduce/_speedups.c); everything else is in pyproject.toml.

``optional=True``: without a C compiler the install goes on, and pymapreduce runs its
Python loops instead (pymapreduce/speedups.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pymapreduce._speedups", ["pymapreduce/_speedups.c"],
                             optional=True)])

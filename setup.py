"""Only wires the cffi build script; all build logic lives in src/_native/build.py."""
from setuptools import setup

setup(cffi_modules=["src/_native/build.py:ffibuilder"])

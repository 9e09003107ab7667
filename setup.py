"""Stub for Dataflow's --setup_file, which runs `python setup.py sdist`.

All metadata lives in setup.cfg.
"""
import setuptools

setuptools.setup()

"""Benchmarks of the mixgen project: the CLIP retrieval harness and speed measurements.

A package only so that ``mixgen-clip-retrieval`` can be installed as a console script;
the scripts also run as plain files (``python benchmarks/clip_retrieval.py``).
"""

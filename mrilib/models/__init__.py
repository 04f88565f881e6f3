"""Models of the book: the E2E VarNet factory (fastMRI's ``VarNet``) and later chapters' networks.

Submodules are imported lazily by their users (``from mrilib.models.varnet import build_varnet``)
so that importing one model does not pull in the others.
"""

"""Numba kernels, and nothing else: activations, dense layers, analytic pair kernels, tile products.

Private. Every function here expects validated, C-ordered float64 or float32 arrays; the public
modules above (:mod:`ntksolve.nets`, :mod:`ntksolve.kernels`, ...) validate and convert first.
Importing this package compiles nothing: every kernel is compiled on its first call and cached.
"""

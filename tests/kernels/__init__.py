"""Tests of veil.kernels."""

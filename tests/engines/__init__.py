"""Tests of veil.engines."""

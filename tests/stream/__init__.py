"""Tests of veil.stream."""

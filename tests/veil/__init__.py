"""Tests of the veil package itself: its API, CLI, layers and wheel."""

"""Tests of the runtimes stage."""

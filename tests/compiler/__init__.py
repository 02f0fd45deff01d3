"""Tests of the compiler stage."""

"""Tests of the adapters stage."""

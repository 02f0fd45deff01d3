"""Tests of the tools stage."""

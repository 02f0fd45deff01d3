"""Tests of the targets stage."""

"""Batch scoring: local, Spark and Ray engines."""

"""The suite's fixtures and helpers live in tests/support/; this only registers them."""

pytest_plugins = ["tests.support.fixtures", "tests.support.s3_server"]

"""Shared pytest configuration: fixtures for real services live in ``tests/harness``."""

pytest_plugins = [
    "tests.harness.davserver",
    "tests.harness.minio",
    "tests.harness.postgres",
    "tests.harness.vaults",
    "tests.harness.versitygw",
]

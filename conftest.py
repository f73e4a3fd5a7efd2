"""Root pytest configuration: registers the shared fixture modules in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.localnet",
    "tests.fixtures.store",
    "tests.fixtures.redis",
]

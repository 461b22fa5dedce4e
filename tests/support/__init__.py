"""Shared test infrastructure: real servers, keys, data locations, model builders and helpers.

Tests import helpers from here only (tests/architecture/test_tests_layout.py checks it); fixtures
come by name through :mod:`tests.support.plugin`, which the top-level conftest registers.
"""

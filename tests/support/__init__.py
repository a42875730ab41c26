"""Helpers shared by the integration and acceptance tests."""

"""Reusable contract test suites: behaviour every implementation of a port must show."""

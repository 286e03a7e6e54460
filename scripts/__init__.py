"""Maintenance scripts of the template, importable by its tests."""

"""The benchmark: the default generated service against a bare ceiling, side by side."""

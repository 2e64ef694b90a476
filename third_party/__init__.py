"""Ported third-party architectures (see third_party/README.md for credits and licences)."""

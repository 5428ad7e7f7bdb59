"""Packaged YAML configs: ``default.yaml`` holds every key; ``<task>.yaml`` files override it."""

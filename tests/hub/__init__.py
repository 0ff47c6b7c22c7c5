"""The JupyterHub room's tests (issue #33): a separate target, ``make test-hub`` (root, the
``hub`` extra, configurable-http-proxy), not part of ``make test``."""

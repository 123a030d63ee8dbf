"""Measuring a server, bottom-up: records, the HTTP client, load shapes, scenario kinds, metrics,
machine load and memory sampling, the reference server and calibration, TGI's native client.
Imports only the package's root leaves (see infbench.LAYERS)."""

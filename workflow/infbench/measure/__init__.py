"""Measuring a server: the bench job, scenario kinds, the HTTP client, load shapes, records, metrics,
the reference server and calibration."""

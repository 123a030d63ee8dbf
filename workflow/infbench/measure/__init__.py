"""Measuring a server: the bench job, the HTTP client, load shapes, records, metrics, the reference server and calibration."""

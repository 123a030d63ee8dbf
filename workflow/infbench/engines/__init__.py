"""Engine servers: one adapter per engine kind, the spec files a bench job reads, the server
process lifecycle and GPU leases."""

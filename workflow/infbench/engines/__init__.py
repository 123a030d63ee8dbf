"""Engine servers: one plug-in per engine kind (engines/kinds/), the spec files a bench job reads, the server
process lifecycle and GPU leases."""

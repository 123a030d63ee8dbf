"""Engine servers: one adapter per engine kind, the server process lifecycle, GPU leases and the TGI native client."""

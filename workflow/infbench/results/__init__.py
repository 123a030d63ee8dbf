"""What a run leaves behind: tables, plots, provenance, report pages, bundles and secret redaction."""

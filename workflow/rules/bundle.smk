# The run's bundle: `snakemake --cores all bundle` writes results/bundles/{run_id}.tar.gz.
#
# The run id comes from results/provenance.json, which exists only once the run is done, so the
# bundle's name cannot be an output Snakemake knows when it plans the DAG. `bundle` is therefore a
# target rule without outputs: asking for it brings every result up to date first (its inputs), then
# it always packs them, and prints the bundle's path. The bytes are deterministic, so packing the
# same results again gives the same file.


# Pack the tables, raw records, memory results, plots, provenance and logs, secrets redacted.
rule bundle:
    input:
        rules.provenance.output,
        rules.plots.output,
        rules.report_pages.output,
        # The raw records themselves: deleted ones are measured again before anything is packed.
        all_raw_records(),
        all_server_files(),
    log:
        "logs/bundle.log",
    run:
        from infbench.results.bundle_make import bundle_for_snakemake

        bundle_for_snakemake(config, Path(log[0]))

"""Jobs: the bench job, which starts an engine's server and measures it (engines, specs and the
measurement library together). Above every library it drives; only results/ and the CLI are above it."""

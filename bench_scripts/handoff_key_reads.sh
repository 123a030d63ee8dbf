#!/bin/sh
# Issue 18's figure for typed records: key-string reads (.get("key"), ["key"], ['key']) removed and
# added between two commits in the package and the rules. The arch stage that typed ServerInfo,
# the spec files and the small handoff files: bench_scripts/handoff_key_reads.sh 5345e2a 0e30845
# (68 removed, 6 added: three in EngineSpec.from_dict's dispatch on `kind`, three nested dicts).
set -eu
base=${1:?base commit}
head=${2:-HEAD}
pattern="\.get\(\"[a-z_0-9]+\"|\.get\('[a-z_0-9]+'|\[\"[a-z_0-9]+\"\]|\['[a-z_0-9]+'\]"
diff=$(git diff "$base" "$head" -- workflow/)
removed=$(printf '%s\n' "$diff" | grep -E '^-[^-]' | grep -oE "$pattern" | wc -l)
added=$(printf '%s\n' "$diff" | grep -E '^\+[^+]' | grep -oE "$pattern" | wc -l)
echo "key-string reads: removed $removed, added $added (net $((removed - added)) fewer)"

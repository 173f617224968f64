#!/usr/bin/env bash
# `make lint`: swift-format's rules (.swift-format at the top of the
# repository) over Sources and Tests. Any finding fails.
#
# Layout findings (indentation, line breaks, spacing, trailing commas, line
# length) are reported but do not fail: the code predates the configuration,
# and reformatting every file would be churn that hides real changes. The
# rules that catch mistakes (import order, naming, one declaration per line,
# grouped literals, documentation comment style...) are enforced.
set -euo pipefail
cd "$(dirname "$0")/../.."
layout='\[(Indentation|AddLines|RemoveLine|Spacing|TrailingComma|LineLength)\]'
findings=$(swift format lint --recursive --parallel Sources Tests Benchmarks/Benchmarks 2>&1 || true)
enforced=$(grep -E 'warning: \[|error: ' <<<"$findings" | grep -vE "$layout" || true)
layout_count=$(grep -cE "$layout" <<<"$findings" || true)
if [ -n "$enforced" ]; then
    echo "$enforced"
    echo "lint: $(wc -l <<<"$enforced") finding(s) of enforced rules" >&2
    exit 1
fi
echo "lint: no findings of enforced rules ($layout_count layout findings not enforced)"

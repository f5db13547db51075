#!/bin/sh
# The test runner `make mutation` gives mutmut: runs its arguments and passes their exit status on, except that a
# mutant that broke the import becomes 1. mutmut 2.5.1 counts a mutant as killed only on status 1, so a mutant that
# cannot even be imported would otherwise be reported as a survivor. pytest reports a broken import as status 2 (a
# collection error) or, when tests/conftest.py is what imports the broken module (it imports imt_cds, so nearly every
# core module), as status 4 with "ImportError while loading conftest"; any other status 4 (a wrong option) and
# status 5 (no tests collected: a wrong selection) are passed on unchanged, so a bad selection never looks like kills.
output=$(mktemp) || exit 3
"$@" >"$output" 2>&1
status=$?
cat "$output"
if [ "$status" -eq 4 ] && grep -q "ImportError while loading conftest" "$output"; then
    status=2
fi
rm -f "$output"
if [ "$status" -eq 2 ]; then
    exit 1
fi
exit "$status"

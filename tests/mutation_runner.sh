#!/bin/sh
# The test runner `make mutation` gives mutmut: runs its arguments and passes their exit status on, except that a
# mutant the tests see break is counted as killed. mutmut 2.5.1 counts a mutant as killed only on status 1, so these
# become 1: pytest's status 2 (a collection error: the mutant broke a test module's import), status 4 when the
# conftest could not be loaded (the mutant broke the package's import, which tests/conftest.py does first: a syntax
# error, a class that cannot be created), and a test process killed by a signal (status above 128: the mutant made
# durable-rules crash). Any other status 4 (a wrong option or path) and status 5 (no tests collected: a wrong
# selection) are passed on unchanged, so a bad selection never looks like kills.
output=$(mktemp) || exit 3
"$@" >"$output" 2>&1
status=$?
cat "$output"
if [ "$status" -eq 4 ] && grep -q "while loading conftest" "$output"; then
    status=1
fi
rm -f "$output"
if [ "$status" -eq 2 ] || [ "$status" -gt 128 ]; then
    exit 1
fi
exit "$status"

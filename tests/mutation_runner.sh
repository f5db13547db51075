#!/bin/sh
# The test runner `make mutation` gives mutmut: runs its arguments and passes their exit status on, except that
# pytest's status 2 (a collection error: the mutant broke the import) becomes 1. mutmut 2.5.1 counts a mutant as
# killed only on status 1, so a mutant that cannot even be imported would otherwise be reported as a survivor.
# Status 5 (no tests collected: a wrong selection) is passed on unchanged, so a bad selection never looks like kills.
"$@"
status=$?
if [ "$status" -eq 2 ]; then
    exit 1
fi
exit "$status"

"""The command line run in the test process (``main()`` with its output captured), for tests that compare what a
command prints line for line: faster than the installed script, and mutation testing's coverage sees which test
runs which line."""

from __future__ import annotations

import pytest

from imt_cds.cli.main import main


def command(capsys, *args: object) -> tuple[int, str, str]:
    """``imt-cds ARGS`` in this process: its exit status, standard output and standard error (a command may end by
    ``SystemExit``, as the console script does)."""
    capsys.readouterr()
    try:
        status = main([str(a) for a in args])
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def refused_option(capsys, *args: object) -> str:
    """The one line of standard error with which argparse refuses an option's value (exit 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        main([str(a) for a in args])
    assert caught.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]

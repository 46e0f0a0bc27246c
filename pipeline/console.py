"""Lines for the person at the console, from any process of a command (the driver, a Ray
Train worker, a solo task, the MLflow sender's thread).

    say("MLflow at http://10.0.0.5:5000 is back: the record kept for 41 s is delivered")
    say("storage s3://runs unreachable (...): waiting for it", err=True)

Written to the stream itself, not with `print`: in its workers Ray Train (2.60) replaces
`print` with one that writes the line and also hands it to the root logger, and both reach
the command's console, so every line a worker printed appeared twice.
"""

from __future__ import annotations

import sys


def say(line: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(f"{line}\n")
    stream.flush()

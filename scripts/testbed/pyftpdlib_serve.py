"""pyftpdlib's own command line (`python -m pyftpdlib ...`), with the test bed's fixes.

    pyftpdlib_serve.py [--noepsv] PYFTPDLIB-ARGS...

- Active mode (PORT/EPRT) with a guarded data connector: pyftpdlib 2.2.0 keeps its
  ActiveDTP after handing the connected socket to the data-transfer handler, and closes
  it again at the next PORT/EPRT or at the session's end; that close unregisters the
  descriptor *number* it once had from the I/O loop. By then the transfer has closed the
  socket and the number may belong to another session's connection, which is no longer
  polled and hangs (about one transfer in ten with two or more concurrent active-mode
  sessions). Once the socket is handed over, the connector owns nothing and its close
  does nothing.
- `--noepsv`: EPSV answered with 500 (as old or NATed servers do).
- `--xferlog PATH`: pyftpdlib's log lines (INFO: one "RETR|STOR <file on disk>
  completed=0|1 bytes=N seconds=S" line per transfer, cut ones included, and one
  "RNFR <from> RNTO <to>" line per rename) are also appended to PATH.
"""

import logging
import sys

from pyftpdlib import __main__ as cli
from pyftpdlib import handlers
from pyftpdlib.handlers.ftp.dispatchers import ActiveDTP
from pyftpdlib.log import config_logging


class GuardedActiveDTP(ActiveDTP):
    """An ActiveDTP that gives up its descriptor with its socket."""

    def handle_connect(self):
        super().handle_connect()
        # The socket now belongs to the data-transfer handler (or was closed already):
        # close() must neither unregister its descriptor number nor close it.
        self._fileno = None
        self._closed = True


handlers.FTPHandler.active_dtp = GuardedActiveDTP

args = sys.argv[1:]
if args[:1] == ["--xferlog"]:
    # The test bed counts the transfers of each file there (tests/testbed/src/xferlog.rs).
    # pyftpdlib's own set-up (INFO to stderr), which it skips once its logger has a
    # handler; then the file's.
    config_logging()
    handler = logging.FileHandler(args[1])
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("pyftpdlib").addHandler(handler)
    args = args[2:]
if args[:1] == ["--noepsv"]:
    args = args[1:]
    handlers.FTPHandler.proto_cmds = {
        k: v for k, v in handlers.FTPHandler.proto_cmds.items() if k != "EPSV"
    }
sys.argv = ["pyftpdlib"] + args
cli.main()

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
"""

import sys

from pyftpdlib import __main__ as cli
from pyftpdlib import handlers
from pyftpdlib.handlers.ftp.dispatchers import ActiveDTP


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
if args[:1] == ["--noepsv"]:
    args = args[1:]
    handlers.FTPHandler.proto_cmds = {
        k: v for k, v in handlers.FTPHandler.proto_cmds.items() if k != "EPSV"
    }
sys.argv = ["pyftpdlib"] + args
cli.main()

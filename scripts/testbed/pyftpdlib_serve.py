"""pyftpdlib's own command line (`python -m pyftpdlib ...`), with the test bed's fixes.

    pyftpdlib_serve.py [--xferlog PATH] [--digests|--lie] [--truncate N] [--noepsv] [--norest]
                       PYFTPDLIB-ARGS...

- Active mode (PORT/EPRT) with a guarded data connector: pyftpdlib 2.2.0 keeps its
  ActiveDTP after handing the connected socket to the data-transfer handler, and closes
  it again at the next PORT/EPRT or at the session's end; that close unregisters the
  descriptor *number* it once had from the I/O loop. By then the transfer has closed the
  socket and the number may belong to another session's connection, which is no longer
  polled and hangs (about one transfer in ten with two or more concurrent active-mode
  sessions). Once the socket is handed over, the connector owns nothing and its close
  does nothing.
- `--noepsv`: EPSV answered with 500 (as old or NATed servers do).
- `--norest`: REST answered with 500 (a server that cannot resume).
- `--digests`: the server's own digests of a file (issue 21), as proftpd's mod_digest
  offers them: FEAT lists `HASH SHA-256*;MD5`, `XSHA256` and `XMD5`; `OPTS HASH <alg>`
  selects; `HASH <path>` answers `213 SHA-256 0-<last> <hex> <path>`, `XSHA256 <path>`
  and `XMD5 <path>` answer `250 <hex>`.
- `--lie`: as `--digests`, every digest wrong (its last hex digit changed): a server
  whose digest never matches what it sent.
- `--truncate N`: every RETR sends at most N bytes, then closes the data connection and
  replies 226 as if the file were whole (a server that cuts downloads short).
- `--xferlog PATH`: pyftpdlib's log lines (INFO: one "RETR|STOR <file on disk>
  completed=0|1 bytes=N seconds=S" line per transfer, cut ones included, and one
  "RNFR <from> RNTO <to>" line per rename) are also appended to PATH.
"""

import hashlib
import logging
import os
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

HASH_ALGORITHMS = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}


def add_digests(lie):
    """HASH, OPTS HASH, XSHA256 and XMD5 on every session (see the header)."""
    cls = handlers.FTPHandler

    def digest(handler, path, name):
        h = HASH_ALGORITHMS[name]()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        value = h.hexdigest()
        if lie:
            value = value[:-1] + ("0" if value[-1] != "0" else "1")
        return value

    def reply_digest(handler, path, name, shape):
        try:
            if not os.path.isfile(path):
                raise OSError("not a plain file")
            value = digest(handler, path, name)
        except OSError as err:
            handler.respond(f"550 {err}.")
            return
        if shape == "hash":
            size = os.path.getsize(path)
            last = max(size - 1, 0)
            handler.respond(f"213 {name} 0-{last} {value} {handler.fs.fs2ftp(path)}")
        else:
            handler.respond(f"250 {value}")

    def ftp_HASH(self, path):
        reply_digest(self, path, getattr(self, "_hash_name", "SHA-256"), "hash")

    def ftp_XSHA256(self, path):
        reply_digest(self, path, "SHA-256", "x")

    def ftp_XMD5(self, path):
        reply_digest(self, path, "MD5", "x")

    plain_opts = cls.ftp_OPTS

    def ftp_OPTS(self, line):
        cmd, _, arg = line.partition(" ")
        if cmd.upper() != "HASH":
            return plain_opts(self, line)
        name = arg.strip().upper()
        if name in HASH_ALGORITHMS:
            self._hash_name = name
            self.respond(f"200 {name}")
        else:
            self.respond("504 Unknown algorithm.")

    for name, fn in [("ftp_HASH", ftp_HASH), ("ftp_XSHA256", ftp_XSHA256),
                     ("ftp_XMD5", ftp_XMD5), ("ftp_OPTS", ftp_OPTS)]:
        setattr(cls, name, fn)
    cmds = dict(cls.proto_cmds)
    for name in ("HASH", "XSHA256", "XMD5"):
        cmds[name] = dict(perm="r", auth=True, arg=True, help=f"Syntax: {name} <SP> file-name.")
    cls.proto_cmds = cmds
    plain_feat = cls.ftp_FEAT

    def ftp_FEAT(self, line):
        extra = ["HASH SHA-256*;MD5", "XSHA256", "XMD5"]
        self._extra_feats = [f for f in self._extra_feats if f not in extra] + extra
        plain_feat(self, line)

    cls.ftp_FEAT = ftp_FEAT


class Truncated:
    """A file whose reads stop after `limit` bytes."""

    def __init__(self, fd, limit):
        self._fd, self._left = fd, limit
        self.name = fd.name
        self.closed = False

    def read(self, n=-1):
        n = self._left if n < 0 else min(n, self._left)
        data = self._fd.read(n)
        self._left -= len(data)
        return data

    def close(self):
        self.closed = True
        self._fd.close()


def truncate_downloads(limit):
    """Every RETR sends at most `limit` bytes and still replies 226."""
    cls = handlers.FTPHandler
    cls.use_sendfile = False
    plain_open = cls.run_as_current_user

    def ftp_RETR(self, file):
        def opener(fn, *a):
            fd = plain_open(self, fn, *a)
            return Truncated(fd, limit) if fn == self.fs.open else fd
        self.run_as_current_user = opener
        try:
            return RETR(self, file)
        finally:
            del self.run_as_current_user

    RETR = cls.ftp_RETR
    cls.ftp_RETR = ftp_RETR


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
if args[:1] in (["--digests"], ["--lie"]):
    add_digests(lie=args[0] == "--lie")
    args = args[1:]
if args[:1] == ["--truncate"]:
    truncate_downloads(int(args[1]))
    args = args[2:]
for flag, command in (("--noepsv", "EPSV"), ("--norest", "REST")):
    if args[:1] == [flag]:
        args = args[1:]
        handlers.FTPHandler.proto_cmds = {
            k: v for k, v in handlers.FTPHandler.proto_cmds.items() if k != command
        }
sys.argv = ["pyftpdlib"] + args
cli.main()

"""Engine ports on this host: free for real (bind test), owned by the right process, still in use.

Several agents can run on one machine (the local agent and a private one, say) and other programs
hold ports too, so the control plane's port is only a preference: the agent bind-tests it before
a launch and moves to the next free port when it is taken (PROTOCOL.md §3). Readiness must prove
the answer comes from this replica's engine, not from whatever else listens on the port: the
listening socket's inode (from /proc/net/tcp) must be one of the engine session's open files.
"""

from __future__ import annotations

import errno
import os
import socket

PORT_RANGE = range(20000, 30000)  # where the control plane places engines; firewalls open this range

_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_LISTEN = "0A"
_ESTABLISHED = "01"


def port_is_free(port: int) -> bool:
    """True when nothing is bound to ``port`` on any address (TIME_WAIT leftovers do not count)."""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this host
        try:
            # SO_REUSEADDR like every server (uvicorn, llama-server, the stand-in) sets it: a port
            # left in TIME_WAIT by a previous engine is usable, a listening one is not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            continue  # e.g. EADDRNOTAVAIL: this family is not configured here, nothing can hold it
        finally:
            sock.close()
    return True


def choose_port(preferred: list[int | None], taken: set[int]) -> int | None:
    """The first free port among ``preferred``, else the next free one in PORT_RANGE after the
    first preference (wrapping); ``taken`` are ports this agent has promised to other engines."""
    seen: set[int] = set()
    for port in preferred:
        if port is None or port in seen:
            continue
        seen.add(port)
        if 0 < port < 65536 and port not in taken and port_is_free(port):
            return port
    start = next((p for p in preferred if p is not None and p in PORT_RANGE), PORT_RANGE.start)
    n = len(PORT_RANGE)
    offset = start - PORT_RANGE.start
    for k in range(1, n + 1):
        port = PORT_RANGE.start + (offset + k) % n
        if port not in taken and port not in seen and port_is_free(port):
            return port
    return None


def substitute_port(argv: list[str], env: dict[str, str], old: int, new: int) -> tuple[list[str], dict[str, str]]:
    """Put ``new`` where the recipe rendered ``old``: `--port OLD`, `--port=OLD`, and env values
    `OLD` or `HOST:OLD` (e.g. OLLAMA_HOST)."""
    if old == new:
        return list(argv), dict(env)
    o, n = str(old), str(new)
    out: list[str] = []
    after_flag = False
    for token in argv:
        if after_flag and token == o:
            token = n
        elif token == f"--port={o}":
            token = f"--port={n}"
        after_flag = token == "--port"
        out.append(token)
    new_env = {}
    for key, value in env.items():
        if value == o:
            value = n
        elif value.endswith(":" + o):
            value = value[: -len(o)] + n
        new_env[key] = value
    return out, new_env


def _sockets(port: int, state: str) -> list[int] | None:
    """Inodes of TCP sockets whose local port is ``port`` in ``state``; None if /proc has no tables."""
    inodes: list[int] = []
    found = False
    for table in _TCP_TABLES:
        try:
            with open(table) as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != state:
                continue
            try:
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.append(int(fields[9]))
            except (IndexError, ValueError):
                continue
    return inodes if found else None


def established_connections(port: int) -> int | None:
    """Open client connections to a server on ``port`` (requests in flight or idle keep-alive)."""
    inodes = _sockets(port, _ESTABLISHED)
    return None if inodes is None else len(inodes)


def session_members(sid: int) -> list[int]:
    """Pids in session ``sid`` or process group ``sid`` (an engine leads its own session)."""
    members = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return members
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                raw = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        try:
            if int(fields[2]) == sid or int(fields[3]) == sid:
                members.append(int(name))
        except (IndexError, ValueError):
            continue
    return members


def socket_inodes(pids: list[int]) -> tuple[set[int], bool]:
    """(inodes of the sockets these processes hold, whether some process's fds were unreadable)."""
    inodes: set[int] = set()
    unreadable = False
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except PermissionError:
            unreadable = True  # an engine of another OS user, seen by an agent that is not root
            continue
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                try:
                    inodes.add(int(target[8:-1]))
                except ValueError:
                    continue
    return inodes, unreadable


def listener_owned_by(sid: int, port: int) -> bool | None:
    """Does the engine session ``sid`` hold the socket listening on ``port``?

    False when something listens there but it is not this engine (another engine, another
    program) or nothing listens at all; None when this host's /proc cannot tell.
    """
    listening = _sockets(port, _LISTEN)
    if listening is None:
        return None
    if not listening:
        return False
    inodes, unreadable = socket_inodes(session_members(sid))
    if set(listening) <= inodes:
        return True  # every listener is ours (SO_REUSEPORT would let a stranger share the port)
    return None if unreadable and not set(listening) & inodes else False

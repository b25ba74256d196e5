"""A small HTTP/1.1 server for one connection: GET and HEAD of static files under the document
root, keep-alive, and the status pages (`/server-status?auto`, `?json`). Each step moves the
slot through SPEC.md §2's busy states; a graceful directive met while serving ends the
connection after the answer in hand, with `Connection: close` (SPEC §6.2).
"""

import mimetypes
import os
import socket
import time
import urllib.parse

from . import slots, status
from .slots import BUSY_READ, BUSY_WRITE, CLOSING, KEEPALIVE, Directive

SERVER = "preforkd-py/0.1.0"
HEAD_LIMIT = 8192
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 431: "Request Header Fields Too Large",
           505: "HTTP Version Not Supported"}
DEFAULT_PAGE = b"<!doctype html><title>It works</title><h1>It works!</h1><p>preforkd-py</p>\n"


def _set(board, slot, born, state):
    """Moves the slot; False when a directive is pending (finish this answer, then close)."""
    try:
        slots.child_set(board, slot, born, state)
        return True
    except Directive:
        return False


def _read_head(conn, buf, timeout):
    """Reads until a blank line: (head bytes, rest), or (None, why) on timeout, EOF or overflow."""
    conn.settimeout(timeout)
    while b"\r\n\r\n" not in buf:
        if len(buf) > HEAD_LIMIT:
            return None, 431
        try:
            chunk = conn.recv(4096)
        except (socket.timeout, TimeoutError):
            return None, 408 if buf else None
        except OSError:
            return None, None
        if not chunk:
            return None, None
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def serve(ctx, board, slot, born, conn, peer):
    cfg = ctx.cfg
    client = peer[0] if isinstance(peer, tuple) else "unix"
    board.set_text(slot, slots.R_CLIENT, slots.CLIENT_BYTES, str(client))
    buf = b""
    requests = 0
    keep = True
    try:
        while keep:
            head, rest = _read_head(conn, buf, cfg.keep_alive_timeout if requests else cfg.timeout)
            if head is None:
                if rest:  # 408 or 431: say so, then close
                    _send(conn, *_error(rest), head_only=False, close=True)
                break
            buf = rest
            directive_free = _set(board, slot, born, BUSY_READ)
            lines = head.decode("latin-1").split("\r\n")
            request_line = lines[0]
            board.set_text(slot, slots.R_REQUEST, slots.REQUEST_BYTES, request_line)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            parts = request_line.split(" ")
            requests += 1
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                status_code, hdrs, body = _error(400 if len(parts) != 3 else 505)
                keep = False
                method = "GET"
            else:
                method, target, version = parts
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close" or (
                    version == "HTTP/1.0" and headers.get("connection", "").lower() == "keep-alive")
                directive_free = _set(board, slot, born, BUSY_WRITE) and directive_free
                status_code, hdrs, body = _answer(ctx, method, target, headers, peer)
            if requests >= cfg.max_keep_alive_requests or not directive_free or not cfg.keep_alive:
                keep = False
            sent = _send(conn, status_code, hdrs, body, method == "HEAD", close=not keep)
            board.add_field(slot, slots.R_REQUESTS, 1)
            board.add_field(slot, slots.R_BYTES, sent)
            if keep:
                # A directive that came after this answer went out without `Connection: close`:
                # the client may already be sending its next request, so wait for it and answer
                # it with `Connection: close` (closing now could lose it).
                _set(board, slot, born, KEEPALIVE)
    finally:
        _set(board, slot, born, CLOSING)
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.close()


def _error(code):
    body = f"<!doctype html><title>{code} {REASONS[code]}</title><h1>{REASONS[code]}</h1>\n".encode()
    return code, {"Content-Type": "text/html; charset=utf-8"}, body


def _answer(ctx, method, target, headers, peer):
    if method not in ("GET", "HEAD"):
        code, hdrs, body = _error(405)
        hdrs["Allow"] = "GET, HEAD"
        return code, hdrs, body
    url = urllib.parse.urlsplit(target)
    path = urllib.parse.unquote(url.path)
    if path in (ctx.cfg.status_path, ctx.cfg.status_path + "/"):
        local = not isinstance(peer, tuple) or peer[0] in ("127.0.0.1", "::1") or peer[0].startswith("127.")
        if not local:
            return _error(403)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if "json" in query:
            return 200, {"Content-Type": "application/json"}, status.json_report(ctx).encode()
        if "auto" in query:
            return 200, {"Content-Type": "text/plain; charset=utf-8"}, status.auto(ctx).encode()
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, status.auto(ctx).encode()
    root = ctx.cfg.document_root
    if root is None:
        if path in ("/", "/index.html"):
            return 200, {"Content-Type": "text/html; charset=utf-8"}, DEFAULT_PAGE
        return _error(404)
    # The path rule: normalised, and inside the root after symbolic links are followed.
    rel = os.path.normpath("/" + path).lstrip("/")
    full = os.path.realpath(os.path.join(root, rel))
    if full != root and not full.startswith(root + os.sep):
        return _error(403)
    if os.path.isdir(full):
        full = os.path.join(full, "index.html")
    try:
        with open(full, "rb") as f:
            body = f.read()
    except FileNotFoundError:
        return _error(404)
    except (PermissionError, IsADirectoryError):
        return _error(403)
    kind = mimetypes.guess_type(full)[0] or "application/octet-stream"
    return 200, {"Content-Type": kind}, body


def _send(conn, code, hdrs, body, head_only, close):
    """Writes the answer in one `sendall`; the body bytes sent."""
    lines = [f"HTTP/1.1 {code} {REASONS.get(code, '')}",
             "Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
             f"Server: {SERVER}"]
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)
    try:
        conn.sendall(data)
    except OSError:
        return 0
    return 0 if head_only else len(body)

"""Resolving every *.localhost name to one address: each gateway of a load run listens on its own
127.0.0.x, and the sign-in scripts must reach the one they sign in to."""

import socket


def resolve_localhost_to(ip):
    real = socket.getaddrinfo

    def resolve(host, *rest, **kw):
        if isinstance(host, str) and host.endswith(".localhost"):
            host = ip
        return real(host, *rest, **kw)

    socket.getaddrinfo = resolve

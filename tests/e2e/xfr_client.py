"""Zone-transfer helpers for tests/e2e/transfer-limits.sh (standard library only).

  xfr_client.py slow-axfr PORT ZONE RATE   -> AXFR from 127.0.0.1:PORT read at RATE bytes/s
                                              through a small receive buffer; prints JSON:
                                              bytes, messages, records, rcodes, last type, seconds
  xfr_client.py refuser PORT               -> a UDP server on 127.0.0.1:PORT answering every
                                              NOTIFY with REFUSED; prints one line per NOTIFY
"""
import json
import socket
import struct
import sys
import time


def wire(name):
    return b"".join(bytes([len(label)]) + label.encode() for label in name.strip(".").split(".")) + b"\0"


def skip_name(msg, at):
    while True:
        n = msg[at]
        if n == 0:
            return at + 1
        if n & 0xC0 == 0xC0:
            return at + 2
        at += 1 + n


def last_type(msg):
    """The type of the last answer RR of a message (no compression needed to find it)."""
    qd, an = struct.unpack(">HH", msg[4:8])
    at = 12
    for _ in range(qd):
        at = skip_name(msg, at) + 4
    rtype = None
    for _ in range(an):
        at = skip_name(msg, at)
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[at:at + 10])
        at += 10 + rdlen
    return rtype


def recv_exact(sock, n, rate, state):
    out = b""
    while len(out) < n:
        chunk = sock.recv(min(4096, n - len(out)))
        if not chunk:
            raise EOFError(f"connection closed after {state['bytes'] + len(out)} bytes")
        out += chunk
        # Pace: never ahead of RATE bytes per second since the start.
        state["read"] += len(chunk)
        ahead = state["read"] / rate - (time.monotonic() - state["start"])
        if ahead > 0:
            time.sleep(ahead)
    return out


def slow_axfr(port, zone, rate):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # before connect: a small window
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    query = struct.pack(">HHHHHH", 0x4242, 0, 1, 0, 0, 0) + wire(zone) + struct.pack(">HH", 252, 1)
    sock.sendall(struct.pack(">H", len(query)) + query)
    state = {"start": time.monotonic(), "read": 0, "bytes": 0}
    messages = records = 0
    rcodes = set()
    last = None
    error = None
    try:
        while True:
            (length,) = struct.unpack(">H", recv_exact(sock, 2, rate, state))
            msg = recv_exact(sock, length, rate, state)
            state["bytes"] += 2 + length
            messages += 1
            rcodes.add(msg[3] & 0x0F)
            records += struct.unpack(">H", msg[6:8])[0]
            last = last_type(msg)
            if msg[3] & 0x0F or (last == 6 and records >= 2):  # an error, or the closing SOA
                break
    except (EOFError, OSError) as e:
        error = str(e)
    print(json.dumps({"bytes": state["bytes"], "messages": messages, "records": records,
                      "rcodes": sorted(rcodes), "last_type": last, "error": error,
                      "seconds": round(time.monotonic() - state["start"], 1)}))


def refuser(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    while True:
        msg, peer = sock.recvfrom(4096)
        if len(msg) < 12 or (msg[2] >> 3) & 0x0F != 4:
            continue
        # The question echoed, QR and AA set, opcode NOTIFY, REFUSED.
        reply = msg[:2] + bytes([0x80 | 0x20 | 0x04, 0x05]) + msg[4:6] + b"\0\0\0\0\0\0" + msg[12:skip_name(msg, 12) + 4]
        sock.sendto(reply, peer)
        print("NOTIFY refused", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "slow-axfr":
        slow_axfr(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        refuser(int(sys.argv[2]))

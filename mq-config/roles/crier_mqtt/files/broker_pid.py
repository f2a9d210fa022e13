"""Print the pid of the broker started from a given configuration.

argv: pid file, configuration path. Exits 1 when the pid file is missing or
stale, or names a process that is not `mosquitto ... <configuration>` (a pid
reused by something else after a crash).
"""
import sys

try:
    with open(sys.argv[1], encoding="ascii") as pid_file:
        pid = int(pid_file.read().split()[0])
    with open("/proc/%d/cmdline" % pid, "rb") as cmdline_file:
        cmdline = cmdline_file.read().split(b"\0")
except (OSError, ValueError, IndexError):
    sys.exit(1)
if sys.argv[2].encode() not in cmdline or not cmdline[0].endswith(b"mosquitto"):
    sys.exit(1)
print(pid)

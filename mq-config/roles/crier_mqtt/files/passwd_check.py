"""Which users of a Mosquitto password file need `mosquitto_passwd`.

mosquitto_passwd salts every hash at random, so running it on each play would
always report a change. This reads the wanted users and passwords as JSON on stdin
({"path": ..., "users": {name: password}}), checks the file's hashes the way
Mosquitto does ($7$ = PBKDF2-SHA512, $6$ = SHA-512 of password + salt) and prints
{"set": [users missing or with another password], "delete": [users not wanted]}.
"""
import base64
import hashlib
import hmac
import json
import sys


def matches(password, stored):
    parts = stored.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            salt = base64.b64decode(parts[3])
            digest = hashlib.pbkdf2_hmac(
                "sha512", password.encode(), salt, int(parts[2])
            )
            expected = parts[4]
        elif len(parts) == 4 and parts[1] == "6":
            salt = base64.b64decode(parts[2])
            digest = hashlib.sha512(password.encode() + salt).digest()
            expected = parts[3]
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(base64.b64encode(digest).decode(), expected)


def main():
    wanted = json.load(sys.stdin)
    stored = {}
    try:
        with open(wanted["path"], encoding="utf-8") as passwd:
            for line in passwd:
                name, sep, hashed = line.rstrip("\n").partition(":")
                if sep:
                    stored[name] = hashed
    except FileNotFoundError:
        pass
    users = wanted["users"]
    result = {
        "set": sorted(
            name
            for name, password in users.items()
            if name not in stored or not matches(password, stored[name])
        ),
        "delete": sorted(name for name in stored if name not in users),
    }
    json.dump(result, sys.stdout)


main()

#!/usr/bin/env python3
"""An independent implementation of the attested-runner statement digest
(docs/build-type.md, "The statement digest"): RFC 8785 canonical JSON of the
provenance statement without its response-quote byproduct, then SHA-256.

It shares no code with the Go implementation: Python's json parser and a
canonicalizer written here from RFC 8785. Usage: jcs_digest.py BUNDLE
(a sigstore bundle); prints the digest in hex.
"""
import base64
import hashlib
import json
import math
import sys

QUOTE = "attested-runner/response-quote"


def no_duplicates(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError("duplicate key %r (not I-JSON)" % k)
        obj[k] = v
    return obj


def reject_constant(name):
    raise ValueError("%s is not JSON" % name)


def es6_number(x):
    """ECMAScript Number.prototype.toString, as RFC 8785 section 3.2.2.3 asks."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError("NaN and Infinity are not JSON")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    r = repr(abs(x))  # the shortest digits that round-trip
    mantissa, _, exp = r.partition("e")
    exp = int(exp) if exp else 0
    ip, _, fp = mantissa.partition(".")
    all_digits = ip + fp
    z = len(all_digits) - len(all_digits.lstrip("0"))
    digits = all_digits[z:].rstrip("0")
    n = len(ip) - z + exp  # value = 0.DIGITS x 10^n
    k = len(digits)
    if k <= n <= 21:
        s = digits + "0" * (n - k)
    elif 0 < n <= 21:
        s = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        s = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + s


SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def es6_string(s):
    out = ['"']
    for c in s:
        if c in SHORT:
            out.append(SHORT[c])
        elif ord(c) < 0x20:
            out.append("\\u%04x" % ord(c))
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def canonical(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        return es6_number(v)
    if isinstance(v, str):
        return es6_string(v)
    if isinstance(v, list):
        return "[" + ",".join(canonical(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(es6_string(k) + ":" + canonical(v[k]) for k in keys) + "}"
    raise TypeError(type(v))


def loads(text):
    return json.loads(text, object_pairs_hook=no_duplicates, parse_float=float,
                      parse_int=float, parse_constant=reject_constant)


def main():
    bundle = json.load(open(sys.argv[1], encoding="utf-8"))
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"], validate=True)
    st = loads(payload.decode("utf-8", errors="strict"))
    rd = st["predicate"]["runDetails"]
    kept = [b for b in rd.get("byproducts", []) if not (isinstance(b, dict) and b.get("name") == QUOTE)]
    if kept:
        rd["byproducts"] = kept
    else:
        rd.pop("byproducts", None)
    print(hashlib.sha256(canonical(st).encode("utf-8")).hexdigest())


if __name__ == "__main__":
    main()

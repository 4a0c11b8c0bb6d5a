#!/usr/bin/env python3
"""Writes a wrk Lua script that sends N Twilio-signed voice webhooks from distinct calls.

usage: wrk_requests.py BASE_URL AUTH_TOKEN incoming|code N > requests.lua
"""
import base64
import hashlib
import hmac
import sys
import urllib.parse

base, token, kind, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
path = {"incoming": "/voice/incoming", "code": "/voice/code?try=1"}[kind]
url = base + path
out = ["requests = {}"]
for i in range(n):
    params = {
        "CallSid": "CA%032x" % (i + 1),
        "AccountSid": "AC" + "0" * 32,
        "From": "+1555%07d" % i,
        "To": "+15550000000",
        "CallStatus": "ringing" if kind == "incoming" else "in-progress",
        "Direction": "inbound",
    }
    if kind == "code":
        params["Digits"] = "%012d" % (100000 + i)  # a wrong code for every call
    # Twilio's signature: HMAC-SHA1 over the URL and the sorted parameters, base64.
    signed = url + "".join(k + params[k] for k in sorted(params))
    sig = base64.b64encode(hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest()).decode()
    body = urllib.parse.urlencode(params)
    out.append(
        'requests[%d] = wrk.format("POST", "%s", {["Content-Type"]="application/x-www-form-urlencoded", '
        '["X-Twilio-Signature"]="%s"}, "%s")' % (i + 1, path, sig, body)
    )
out.append("local i = 0")
out.append("request = function() i = i %% %d + 1; return requests[i] end" % n)
out.append("done = function(summary, latency, requests) io.write(string.format('non-2xx %d\\n', summary.errors.status)) end")
print("\n".join(out))

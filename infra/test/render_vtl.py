"""Renders API Gateway mapping templates with a real Velocity engine (airspeed).

stdin:  {"template": "<VTL>", "requests": [{"body": str, "headers": {..}, "requestId": str,
          "requestTimeEpoch": int}]}
stdout: a JSON list with the rendered text of each request.

$input, $context and $util stand for API Gateway's objects with the behaviour its documentation
gives them; the template language itself is airspeed's Velocity.
"""

import base64
import json
import sys
import urllib.parse

import airspeed


class Util:
    def base64Encode(self, s):  # noqa: N802 (API Gateway's name)
        return base64.b64encode(str(s).encode("utf-8")).decode("ascii")

    def base64Decode(self, s):  # noqa: N802
        return base64.b64decode(str(s)).decode("utf-8", "replace")

    def urlEncode(self, s):  # noqa: N802
        return urllib.parse.quote_plus(str(s), safe="")

    def escapeJavaScript(self, s):  # noqa: N802
        return json.dumps(str(s))[1:-1].replace("'", "\\'")


class Input:
    def __init__(self, body, headers, path=None, query=None):
        self.body = body
        self._params = {"header": headers, "path": path or {}, "querystring": query or {}}

    def params(self, name=None):
        if name is None:
            return self._params
        for where in ("path", "querystring", "header"):
            if name in self._params[where]:
                return self._params[where][name]
        return ""

    def json(self, path):
        return json.dumps(json.loads(self.body))


def render(template, request):
    context = {
        "requestId": request["requestId"],
        "requestTimeEpoch": request["requestTimeEpoch"],
    }
    namespace = {
        "input": Input(request["body"], request.get("headers", {})),
        "context": context,
        "util": Util(),
    }
    return airspeed.Template(template).merge(namespace)


def main():
    job = json.load(sys.stdin)
    json.dump([render(job["template"], r) for r in job["requests"]], sys.stdout)


if __name__ == "__main__":
    main()

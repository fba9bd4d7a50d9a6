"""Renders API Gateway mapping templates with a real Velocity engine (airspeed).

stdin:  {"template": "<VTL>", "requests": [{"body": str, "headers": {..}, "requestId": str,
          "requestTimeEpoch": int}],
        "overrides": optional bool}
stdout: a JSON list with the rendered text of each request (with "overrides": {"text", "status"},
        the status a template set in $context.responseOverride.status, or null).

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


def render(template, request, overrides=False):
    context = {
        "requestId": request.get("requestId", ""),
        "requestTimeEpoch": request.get("requestTimeEpoch", 0),
        # What a template may set to change the response ($context.responseOverride.status).
        "responseOverride": {"status": None},
    }
    namespace = {
        "input": Input(request["body"], request.get("headers", {})),
        "context": context,
        "util": Util(),
    }
    text = airspeed.Template(template).merge(namespace)
    if overrides:
        return {"text": text, "status": context["responseOverride"]["status"]}
    return text


def main():
    job = json.load(sys.stdin)
    overrides = job.get("overrides", False)
    json.dump([render(job["template"], r, overrides) for r in job["requests"]], sys.stdout)


if __name__ == "__main__":
    main()

"""Secrets out of text that leaves the PC: the run log and the support bundle pass their text through here.

A session cookie, an Authorization header or a signed download URL in a log or an artifact would let
whoever reads it act as the user. They can turn up in page HTML, console logs, error texts and URLs,
so everything pobatch writes for someone else is redacted the same way, by pattern, before it is
written. What is redacted is replaced by REDACTED, keeping the name so the reader sees what was there.
"""
from __future__ import annotations

import re

REDACTED = "[REDACTED]"

# Query or form parameters whose values are credentials (session ids, tokens, signatures, SAML...).
SECRET_PARAM = (r"(?:[\w.\-]*(?:token|session|sessid|sid|auth|secret|password|passwd|pwd|signature|sig|"
                r"credential|saml\w*|ticket|jwt|apikey|api_key|key|code|state|nonce)[\w.\-]*|se|sp|X-Amz-[\w\-]+)")

_HEADER = re.compile(r"(?im)^(\s*(?:set-cookie|cookie|authorization|proxy-authorization|x-csrf-token|"
                     r"x-xsrf-token)\s*:\s*)(.+)$")
# "cookie": "...", 'Authorization': '...', cookie=..., in JSON, Python reprs and logs.
_QUOTED = re.compile(r"(?i)([\"']?(?:set-cookie|cookie|cookies|authorization|proxy-authorization|"
                     r"x-csrf-token|csrf[_-]?token|authenticity_token)[\"']?\s*[:=]\s*)"
                     r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|\[[^\]]*\]|\{[^}]*\}|[^\s,;}]+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic|negotiate|ntlm)\s+[A-Za-z0-9._~+/=\-]{8,}")
_PARAM = re.compile(r"(?i)([?&;](?:amp;)?" + SECRET_PARAM + r"=)([^&#\s\"'<>]*)")
_META = re.compile(r"(?i)(<meta[^>]+name=[\"'](?:csrf-token|csrf-param|_csrf)[\"'][^>]*content=[\"'])([^\"']*)")
_META_REV = re.compile(r"(?i)(<meta[^>]+content=[\"'])([^\"']*)([\"'][^>]*name=[\"'](?:csrf-token|_csrf)[\"'])")
_HIDDEN = re.compile(r"(?i)(<input[^>]+name=[\"'](?:authenticity_token|_csrf|csrf_token|SAMLResponse|"
                     r"RelayState|user\[password\]|password)[\"'][^>]*value=[\"'])([^\"']*)")
_URL_USERINFO = re.compile(r"(?i)\b(https?://)([^/\s:@]+):([^/\s@]+)@")


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """`text` with cookies, Authorization headers, CSRF tokens, passwords in URLs and forms, and the
    values of credential-like query parameters replaced; `extra_secrets` are literal values to hide."""
    if not text:
        return text
    out = _HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    out = _QUOTED.sub(_quoted, out)
    out = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", out)
    out = _PARAM.sub(lambda m: m.group(1) + REDACTED if m.group(2) else m.group(0), out)
    out = _META.sub(lambda m: m.group(1) + REDACTED, out)
    out = _META_REV.sub(lambda m: m.group(1) + REDACTED + m.group(3), out)
    out = _HIDDEN.sub(lambda m: m.group(1) + REDACTED, out)
    out = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:{REDACTED}@", out)
    for secret in extra_secrets:
        if secret and len(secret) >= 6:  # a short value would blank out ordinary words
            out = out.replace(secret, REDACTED)
    return out


def _quoted(m: re.Match[str]) -> str:
    value = m.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{m.group(1)}{quote}{REDACTED}{quote}"


def redact_url(url: str) -> str:
    """A URL with credential-like query values and any user:password removed (for one log line)."""
    return redact(url) if url else url

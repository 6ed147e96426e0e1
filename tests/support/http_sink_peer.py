"""A loopback HTTP peer for the http and soap sink tests.

Usage: http_sink_peer.py RECORD_FILE [DEFAULT_MODE [CERT_PEM KEY_PEM]]

Listens on 127.0.0.1 (HTTPS with CERT_PEM and KEY_PEM when given) (a port the kernel chooses, printed as "port N" on stdout), records every
request as one JSON line in RECORD_FILE (method, path, headers, body as base64, and for SOAP
requests the parsed submitSingleMessage fields), then answers according to the mode: the first
path segment (/401/anything -> 401), or DEFAULT_MODE when that is not a mode. Modes:

  200 201 400 401 403 500   that status, a short text body
  302                        a redirect to /moved
  slow                       sleeps 10 s, then 200 (beyond the test's timeout)
  soap-aa soap-ae            a submitSingleMessageResponse whose return is an ACK AA / AE
  soap-security              a SOAP 1.2 fault with a urn:SecurityFault detail (HTTP 500)
  soap-fault                 a generic SOAP 1.2 fault (HTTP 500)
  soap-toolarge              a MessageTooLargeFault (HTTP 500)

Stops when its standard input closes.
"""

import base64
import http.server
import json
import ssl
import sys
import threading
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

RECORD = sys.argv[1]
DEFAULT_MODE = sys.argv[2] if len(sys.argv) > 2 else "200"
MODES = {"200", "201", "400", "401", "403", "500", "302", "slow", "soap-aa", "soap-ae",
         "soap-security", "soap-fault", "soap-toolarge"}
IIS = "urn:cdc:iisb:2011"
SOAP = "http://www.w3.org/2003/05/soap-envelope"
LOCK = threading.Lock()


def soap_fields(body):
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        return {"parse_error": str(e)}
    call = root.find("{%s}Body/{%s}submitSingleMessage" % (SOAP, IIS))
    if call is None:
        return {"parse_error": "no soap:Body/urn:submitSingleMessage"}
    out = {}
    for name in ("username", "password", "facilityID", "hl7Message"):
        el = call.find("{%s}%s" % (IIS, name))
        out[name] = None if el is None else (el.text or "")
    return out


def envelope(body):
    return ('<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="%s"><soap:Body>%s'
            '</soap:Body></soap:Envelope>' % (SOAP, body)).encode()


def ack(code, request_hl7):
    control = ""
    if request_hl7:
        msh = request_hl7.split("\r")[0].split("|")
        control = msh[9] if len(msh) > 9 else ""
    segs = ["MSH|^~\\&|STATE-IIS|IIS|DEMO-EHR|DEMO-CLINIC|20261122093001||ACK^V04^ACK|ACK-%s|T|2.5.1"
            % control, "MSA|%s|%s" % (code, control)]
    if code == "AE":
        segs.append("ERR||RXA^1^5|103^Table value not found^HL70357|E||||"
                    "Vaccine code for TESTPATIENT ALEX not recognised")
    text = "\r".join(segs) + "\r"
    escaped = escape(text, {"\r": "&#13;"})
    return envelope('<ns2:submitSingleMessageResponse xmlns:ns2="%s"><ns2:return>%s</ns2:return>'
                    '</ns2:submitSingleMessageResponse>' % (IIS, escaped))


def fault(code, detail):
    return envelope('<soap:Fault><soap:Code><soap:Value>%s</soap:Value></soap:Code>'
                    '<soap:Reason><soap:Text xml:lang="en">%s</soap:Text></soap:Reason>'
                    '<soap:Detail>%s</soap:Detail></soap:Fault>'
                    % (code, "fault text that must not be copied", detail))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        first = self.path.strip("/").split("/")[0]
        mode = first if first in MODES else DEFAULT_MODE
        record = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_b64": base64.b64encode(body).decode(),
        }
        fields = None
        if mode.startswith("soap"):
            fields = soap_fields(body)
            record["soap"] = fields
        with LOCK:
            with open(RECORD, "a") as f:
                f.write(json.dumps(record) + "\n")
        hl7 = (fields or {}).get("hl7Message")
        if mode == "slow":
            time.sleep(10)
            self.answer(200, b"late\n")
        elif mode == "302":
            self.answer(302, b"", extra=[("Location", "http://127.0.0.1:1/moved")])
        elif mode == "soap-aa":
            self.answer(200, ack("AA", hl7), soap=True)
        elif mode == "soap-ae":
            self.answer(200, ack("AE", hl7), soap=True)
        elif mode == "soap-security":
            self.answer(500, fault("soap:Sender", '<urn:SecurityFault xmlns:urn="%s"><urn:Code>10'
                                   '</urn:Code><urn:Reason>Invalid Username, Password or '
                                   'FacilityID</urn:Reason></urn:SecurityFault>' % IIS), soap=True)
        elif mode == "soap-toolarge":
            self.answer(500, fault("soap:Receiver", '<urn:MessageTooLargeFault xmlns:urn="%s">'
                                   '<urn:Size>1</urn:Size><urn:MaxSize>0</urn:MaxSize>'
                                   '</urn:MessageTooLargeFault>' % IIS), soap=True)
        elif mode == "soap-fault":
            self.answer(500, fault("soap:Receiver", '<urn:fault xmlns:urn="%s"><urn:Code>99'
                                   '</urn:Code><urn:Reason>database down</urn:Reason></urn:fault>'
                                   % IIS), soap=True)
        else:
            # A body that must never be copied into a reason (it could echo PHI).
            self.answer(int(mode), b"body echoing TESTPATIENT ALEX\n")

    def answer(self, status, body, soap=False, extra=()):
        try:
            self.send_response(status)
            ctype = "application/soap+xml; charset=utf-8" if soap else "text/plain"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
if len(sys.argv) > 4:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("port %d" % server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()

"""A reverse proxy that logs every request a client makes and the status
it got: the desktop-client tests read what nheko and Quaternion asked of
the gateway from here, not from the gateway's own account of it."""
import http.client
import http.server
import threading
import urllib.parse


class LoggingProxy:
    def __init__(self, target_port, listen_port):
        self.target_port = target_port
        self.listen_port = listen_port
        self.requests = []  # (method, path, status)
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "keep-alive")}
                headers["Host"] = "127.0.0.1:%d" % proxy.target_port
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    status = response.status
                    reply_headers = [(k, v) for k, v in response.getheaders() if k.lower() not in ("transfer-encoding", "connection", "content-length")]
                except OSError as error:
                    status, data, reply_headers = 502, ('{"errcode":"M_UNKNOWN","error":"%s"}' % error).encode(), [("Content-Type", "application/json")]
                finally:
                    upstream.close()
                with proxy.lock:
                    proxy.requests.append((self.command, urllib.parse.urlsplit(self.path).path, status))
                try:
                    self.send_response(status)
                    for key, value in reply_headers:
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    # The client went away (a long poll of a client being stopped).
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", listen_port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.listen_port

    def seen(self):
        with self.lock:
            return list(self.requests)

    def failures(self):
        """Requests answered 404 or 5xx."""
        return [r for r in self.seen() if r[2] == 404 or r[2] >= 500]

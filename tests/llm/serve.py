"""Run llama.cpp's OpenAI-compatible HTTP server (from the `xllamacpp` wheel)
on 127.0.0.1 until SIGTERM/SIGINT.

xllamacpp has no CLI: `xllamacpp.Server(params)` loads the model and starts
llama.cpp's own C++ HTTP server on a background thread (the same server as the
`llama-server` binary). This launcher sets the parameters, waits for the
server to listen, writes its URL to --url-file (atomically, so a reader never
sees half a URL), and sleeps until it is told to stop.

Used by tests/llm/server.sh; not meant to be run by hand, but it can be:

    .venv-llm/bin/python tests/llm/serve.py --model M.gguf --alias NAME --url-file /tmp/url
"""

import argparse
import os
import signal
import sys
import threading


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="path of a verified GGUF file")
    ap.add_argument("--alias", required=True, help="model id served by /v1/models")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: the kernel picks a free port")
    ap.add_argument("--ctx", type=int, default=4096, help="context size in tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--url-file", required=True)
    args = ap.parse_args()

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("serve.py: refusing to listen on a non-loopback address", file=sys.stderr)
        return 2

    # llama.cpp's CPU backend is built with OpenMP here. With the default
    # (active) wait policy its threads spin at every barrier, and on a busy
    # 2-core machine (cargo building next to it, as in `make test`) generation
    # drops to ~1.5 tokens/s; passive waiting keeps ~10 under the same load.
    # Read by libgomp when the extension loads, so set before the import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = args.model
    p.model_alias = {args.alias}
    p.hostnames = [args.host]
    p.port = args.port
    p.n_ctx = args.ctx
    p.n_parallel = 1  # one slot: requests queue; 2 cores gain nothing from more
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.n_threads_http = 2
    # Never reach for a model hub, never serve the web UI, no built-in tools.
    p.offline = True
    p.ui = False
    p.fit_params = False  # GPU memory fitting; there is no GPU
    p.cache_ram_mib = 256  # bound the host-memory prompt cache
    p.endpoint_metrics = True
    p.sampling.seed = 42  # the default when a request sends none

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = xlc.Server(p)  # loads the model; returns once the HTTP server listens
    url = server.listening_address.rstrip("/")
    tmp = args.url_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(url + "\n")
    os.replace(tmp, args.url_file)
    print(f"serve.py: {args.alias} on {url} (pid {os.getpid()})", file=sys.stderr, flush=True)

    while not stop.wait(1.0):
        pass
    print("serve.py: stopping", file=sys.stderr, flush=True)
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())

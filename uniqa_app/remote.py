"""The model worker of `uniqa app`, seen from the page process: `RemoteApp` starts it and is the
page's backend (see `uniqa_app.page`), forwarding each request over a local connection.

The protocol (`multiprocessing.connection`, pickled tuples; the worker is `modeling_uniqa.app.worker`):

    worker -> page   ("ready", info) once the model is loaded, or ("failed", one-line message)
    page -> worker   (method, args), one of METHODS
    worker -> page   ("ok", result) or ("error", one-line message)

The page process listens on 127.0.0.1 with a random key that the worker gets in its environment
(`AUTHKEY_ENV`, not in its command line, which other users can read); the worker connects. When
the connection closes (the page process ended, even killed) the worker exits.
"""

import atexit
import contextlib
import os
import secrets
import subprocess
import sys
import threading
from multiprocessing import AuthenticationError
from multiprocessing.connection import Listener

from .page import BackendError

AUTHKEY_ENV = "UNIQA_APP_AUTHKEY"
METHODS = ("rank_files", "explain", "retrieve")
WORKER_MODULE = "modeling_uniqa.app.worker"


def one_line(message) -> str:
    """`message` (an error, say) as one line: what the protocol and the command's stderr carry."""
    return " ".join(str(message).split())


class RemoteApp:
    """The page's backend in the worker process: started at once, loading the model meanwhile.

    Args:
        model_dir: the model folder (already resolved: the worker gets no Hub repo id).
        batch_size: images per forward when scoring.

    Requests wait for the model to be loaded; they are sent one at a time. A model that fails to
    load, or a worker that dies, makes every request raise `BackendError` saying so.
    """

    def __init__(self, model_dir: str, batch_size: int = 16):
        self.model_dir = model_dir
        self._connection = None
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()  # one request at a time on the connection
        self._ready = None  # the worker's info once ready; a BackendError if it never will be
        authkey = secrets.token_hex(32)
        self._listener = Listener(("127.0.0.1", 0), authkey=authkey.encode("ascii"))
        host, port = self._listener.address
        command = [sys.executable, "-m", WORKER_MODULE, "--address", f"{host}:{port}", "--model", model_dir, "--batch-size", str(batch_size)]
        # A session of its own: Ctrl-C in the terminal reaches only the page process, which stops the worker.
        self._process = subprocess.Popen(command, env={**os.environ, AUTHKEY_ENV: authkey}, start_new_session=True)
        atexit.register(self.close)
        threading.Thread(target=self._accept, name="uniqa-app-accept", daemon=True).start()

    def _accept(self) -> None:
        """Take the worker's connection (in a thread: the page is served meanwhile)."""
        while not self._closed.is_set():
            try:
                self._connection = self._listener.accept()
                break
            except (AuthenticationError, OSError):  # a stranger without the key, or the listener closed
                continue
        self._connected.set()

    def wait_ready(self) -> dict:
        """Wait for the model to be loaded: the worker's info; `BackendError` when it fails or dies."""
        with self._lock:
            return self._wait_ready()

    def _wait_ready(self) -> dict:
        if self._ready is None:
            try:
                self._ready = self._first_message()
            except BackendError as error:
                self._ready = error
        if isinstance(self._ready, BackendError):
            raise self._ready
        return self._ready

    def _first_message(self) -> dict:
        while not self._connected.wait(0.1):
            if self._process.poll() is not None:
                raise BackendError(f"the model worker exited (code {self._process.returncode}) before it could load {self.model_dir}")
        kind, payload = self._receive()
        if kind != "ready":
            raise BackendError(payload)
        return payload

    def _receive(self) -> tuple:
        try:
            if self._connection is None:
                raise EOFError
            return self._connection.recv()
        except (EOFError, OSError) as error:
            try:
                code = f" (exit code {self._process.wait(5)})"
            except subprocess.TimeoutExpired:  # it closed the connection but runs on
                code = ""
            raise BackendError(f"the model worker stopped{code}: restart uniqa app") from error

    def _request(self, method: str, *args):
        with self._lock:
            self._wait_ready()
            with contextlib.suppress(OSError):  # the worker is gone: `_receive` says so
                self._connection.send((method, args))
            kind, payload = self._receive()
        if kind != "ok":
            raise BackendError(payload)
        return payload

    def rank_files(self, paths: list) -> dict:
        return self._request("rank_files", list(paths))

    def explain(self, path: str, prompt: str = "") -> tuple:
        return self._request("explain", path, prompt)

    def retrieve(self, paths: list, queries: list):
        return self._request("retrieve", list(paths), list(queries))

    def close(self, timeout: float = 10) -> None:
        """Stop the worker: SIGTERM (it may be loading, not reading the connection), SIGKILL after `timeout` s."""
        self._closed.set()
        self._listener.close()
        if self._connection is not None:
            self._connection.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        atexit.unregister(self.close)


__all__ = ["AUTHKEY_ENV", "METHODS", "RemoteApp", "one_line"]

"""A real local control plane: etcd, kube-apiserver and kube-controller-manager.

Started on loopback by this project's own code, as envtest does, with no
container engine: tests and the demo talk to an unmodified kube-apiserver
(DESIGN.md, "Real components"). The binaries are built from the Go modules
pinned under ``tools/`` by ``tools/build-controlplane.sh``.

Only the standard library is used (certificates come from the ``openssl``
CLI), so importing this module never pays for the Kubernetes client.

``python -m testing.controlplane up|down|status`` keeps one control
plane running in the background for ``make`` and for manual work.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from kubectl_gitops import exitcodes
from kubectl_gitops.errors import GitOpsError

TOOLS_DIR = Path(__file__).resolve().parent.parent / "tools"
BUILD_SCRIPT = TOOLS_DIR / "build-controlplane.sh"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")

CLUSTER_NAME = "kubectl-gitops-local"
SERVICE_CIDR = "10.0.0.0/24"
# The first address of the service range: the "kubernetes" Service's ClusterIP,
# which in-cluster clients dial, so the serving certificate must name it.
SERVICE_IP = "10.0.0.1"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
LOG_TAIL_LINES = 30
DEFAULT_TIMEOUT = 120.0
# Seconds between SIGTERM and SIGKILL; kube-apiserver shuts down in about one.
STOP_TIMEOUT = 15.0


class ControlPlaneError(GitOpsError):
    """The local control plane could not be built, started or stopped."""


# --------------------------------------------------------------------------
# Binaries


def binaries_dir() -> Path:
    """Build (or reuse from cache) the pinned binaries; return their directory.

    The script's progress goes straight to our stderr, because a first build
    takes minutes and silence would look like a hang.
    """
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed with status {done.returncode} "
                                "(its output is above); run it by hand to see why")
    bin_dir = Path(lines[-1])
    _check_binaries(bin_dir)
    return bin_dir


def _check_binaries(bin_dir: Path) -> None:
    missing = [name for name in COMPONENTS if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        raise ControlPlaneError(f"{bin_dir}: missing {', '.join(missing)}; "
                                f"run {BUILD_SCRIPT} to build them")


# --------------------------------------------------------------------------
# Child processes


_PR_SET_PDEATHSIG = 1
_libc: Any = None


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when this process dies.

    start_new_session keeps a terminal's Ctrl-C away from the children (we
    stop them in order instead), but it also means nothing would kill them if
    we were SIGKILLed; the kernel's parent-death signal covers that. Note it
    fires when the *thread* that spawned the child exits, so start control
    planes from a thread that lives as long as they should.
    """
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        # Loaded here, not in the child: dlopen after fork is not safe.
        _libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()
    libc = _libc

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died before prctl ran; then nobody would kill us.
        if os.getppid() != parent:
            os._exit(1)

    return hook


@dataclass
class _Component:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail_file(self.log, lines)

    def failure(self, what: str) -> str:
        return f"{what}; last lines of {self.log}:\n{self.tail()}"


def tail_file(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            return b"".join(deque(f, maxlen=lines)).decode(errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"


def _spawn(name: str, argv: Sequence[str], log: Path, *, die_with_parent: bool) -> _Component:
    with log.open("ab") as out:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent_hook() if die_with_parent else None)
    return _Component(name, proc, log)


def _terminate(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM, then SIGKILL what is left after ``timeout``; reap everything."""
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # Only while unreaped can the pid not have been reused by another process.
    if proc.poll() is not None:
        return
    # Each child leads its own session, so its group catches anything it forked.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


def free_ports(count: int) -> list[int]:
    # All sockets stay open until every port is chosen, so the ports differ.
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


# --------------------------------------------------------------------------
# Certificates (openssl CLI, so no third-party crypto package is needed)


_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost,IP:{service_ip},DNS:kubernetes,\
DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
"""


@dataclass(frozen=True)
class Pki:
    """Paths of the generated keys and certificates."""

    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_crt(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def client_context(self) -> ssl.SSLContext:
        """TLS context that trusts our CA and presents the admin certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca_crt))
        ctx.load_cert_chain(str(self.admin_crt), str(self.admin_key))
        return ctx


def make_pki(directory: Path) -> Pki:
    """A fresh CA, a serving cert, an admin client cert and a service-account key."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = Pki(directory)
    cnf = directory / "openssl.cnf"
    cnf.write_text(_OPENSSL_CONFIG.format(service_ip=SERVICE_IP))
    # EC keys: generated in milliseconds, accepted by Go, Python and kubectl.
    _new_key(pki.ca_key, "EC")
    _openssl("req", "-x509", "-new", "-config", cnf, "-extensions", "ca", "-key", pki.ca_key,
             "-subj", "/CN=kubectl-gitops-local-ca", "-days", "3650", "-out", pki.ca_crt)
    _issue(pki, cnf, "server", "/CN=kube-apiserver", pki.serving_key, pki.serving_crt)
    # O=system:masters is the group RBAC grants everything, without any binding.
    _issue(pki, cnf, "client", "/O=system:masters/CN=admin", pki.admin_key, pki.admin_crt)
    # RSA for service-account tokens: RS256 is what every token consumer expects.
    _new_key(pki.sa_key, "RSA")
    _openssl("pkey", "-in", pki.sa_key, "-pubout", "-out", pki.sa_pub)
    return pki


def issue_serving_cert(ca_crt: Path, ca_key: Path, directory: Path, name: str,
                       sans: Sequence[str]) -> tuple[Path, Path]:
    """A serving certificate signed by ``ca_crt``, naming only ``sans``
    (``DNS:x`` / ``IP:y``): (certificate, key) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cnf = directory / f"{name}.cnf"
    cnf.write_text(_OPENSSL_CONFIG.split("[server]")[0] + "[server]\n"
                   "basicConstraints = critical,CA:FALSE\n"
                   "keyUsage = critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage = serverAuth\n"
                   f"subjectAltName = {','.join(sans)}\n")
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    _issue(Pki(directory), cnf, "server", f"/CN={name}", key, crt, ca=(ca_crt, ca_key))
    return crt, key


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A new self-signed CA: (certificate, key) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cnf = directory / f"{name}-ca.cnf"
    cnf.write_text(_OPENSSL_CONFIG.format(service_ip=SERVICE_IP))
    crt, key = directory / f"{name}-ca.crt", directory / f"{name}-ca.key"
    _new_key(key, "EC")
    _openssl("req", "-x509", "-new", "-config", cnf, "-extensions", "ca", "-key", key,
             "-subj", f"/CN={name}", "-days", "30", "-out", crt)
    return crt, key


def _issue(pki: Pki, cnf: Path, extensions: str, subject: str, key: Path, crt: Path,
           ca: tuple[Path, Path] | None = None) -> None:
    _new_key(key, "EC")
    csr = crt.with_suffix(".csr")
    _openssl("req", "-new", "-config", cnf, "-key", key, "-subj", subject, "-out", csr)
    ca_crt, ca_key = ca or (pki.ca_crt, pki.ca_key)
    _openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
             "-set_serial", str(secrets.randbits(63)), "-days", "3650",
             "-extfile", cnf, "-extensions", extensions, "-out", crt)
    csr.unlink()


def _new_key(path: Path, algorithm: str) -> None:
    opt = "ec_paramgen_curve:P-256" if algorithm == "EC" else "rsa_keygen_bits:2048"
    _openssl("genpkey", "-algorithm", algorithm, "-pkeyopt", opt, "-out", path)
    path.chmod(0o600)


def _openssl(*args: str | Path) -> None:
    argv = ["openssl", *map(str, args)]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise ControlPlaneError("the openssl command is needed to make certificates; "
                                "install it (e.g. apt-get install openssl)") from e
    if done.returncode != 0:
        raise ControlPlaneError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


# --------------------------------------------------------------------------
# Probes


def https_get(url: str, ctx: ssl.SSLContext | None = None,
              timeout: float = 3.0) -> tuple[int, str]:
    """(status, body) of a GET; status 0 with the reason when nothing answered."""
    # No ProxyHandler: an HTTPS_PROXY from the environment must not see loopback.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if ctx is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, ValueError) as e:
        return 0, str(getattr(e, "reason", e))


def apiserver_ready(server: str, pki: Pki) -> bool:
    return https_get(f"{server}/readyz", pki.client_context()) == (200, "ok")


def _unverified_context() -> ssl.SSLContext:
    # kube-controller-manager serves a self-signed cert made at start-up; it
    # is our own child on loopback, so there is nothing to verify it against.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# --------------------------------------------------------------------------
# Stopping on exit and on signals


_running: set[ControlPlane] = set()
_previous_handlers: dict[int, Any] = {}
# While a child is being spawned it is not yet in its ControlPlane's list, so
# a stop then would miss it; signals that arrive meanwhile wait for the end.
_spawning = 0
_deferred: list[int] = []
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_atexit_registered = False


def _register(cp: ControlPlane) -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_stop_all)
        _atexit_registered = True
    if not _running:
        _install_handlers()
    _running.add(cp)


def _unregister(cp: ControlPlane) -> None:
    _running.discard(cp)
    if not _running:
        _restore_handlers()


def _install_handlers() -> None:
    # Python only lets the main thread set handlers; elsewhere atexit and
    # PDEATHSIG still apply.
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _STOP_SIGNALS:
        current = signal.getsignal(sig)
        # An ignored signal (nohup, `cmd &` in a script) stays ignored.
        if current is not _on_signal and current is not signal.SIG_IGN:
            _previous_handlers[sig] = current
            signal.signal(sig, _on_signal)


def _restore_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, previous in list(_previous_handlers.items()):
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        del _previous_handlers[sig]


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    global _spawning
    _spawning += 1
    try:
        yield
    finally:
        _spawning -= 1
    if not _spawning and _deferred:
        signum = _deferred[0]
        _deferred.clear()
        _on_signal(signum, None)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _spawning:
        _deferred.append(signum)
        return
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    _stop_all()
    _restore_handlers()
    # Then behave as if we had never been installed: the default action
    # (terminate) or whatever handler was there before, e.g. KeyboardInterrupt.
    if callable(previous):
        previous(signum, frame)
    elif previous in (signal.SIG_DFL, None):
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _stop_all() -> None:
    for cp in list(_running):
        cp.stop()


# --------------------------------------------------------------------------
# The control plane


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1.

    ``start()`` sets ``data_dir``, ``server`` (``https://127.0.0.1:PORT``) and
    ``kubeconfig`` (admin, context ``kubectl-gitops-local``, namespace
    ``default``). ``data_dir`` is scratch space owned by the control plane:
    it must be new or empty, and it is removed by ``stop()`` unless ``keep``.
    """

    data_dir: Path
    server: str
    kubeconfig: Path
    pki: Pki
    _api_argv: tuple[Path, list[str]]

    def __init__(self, *, bin_dir: Path | None = None, data_dir: Path | None = None,
                 keep: bool = False, timeout: float = DEFAULT_TIMEOUT,
                 die_with_parent: bool = True,
                 apiserver_args: Sequence[str] = ()) -> None:
        """``apiserver_args`` are added to kube-apiserver's command line (tests
        use it for ``--authentication-config`` and ``--tls-sni-cert-key``)."""
        self._bin_dir = bin_dir
        self._extra_apiserver_args = list(apiserver_args)
        self._requested_dir = data_dir
        self.keep = keep
        self.timeout = timeout
        self._die_with_parent = die_with_parent
        self._components: list[_Component] = []
        self._started = False
        self._stopped = False

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pids(self) -> dict[str, int]:
        return {c.name: c.proc.pid for c in self._components}

    @property
    def logs(self) -> dict[str, Path]:
        return {c.name: c.log for c in self._components}

    def dead(self) -> list[str]:
        """Components that have exited, each with its status."""
        return [f"{c.name} (status {c.proc.returncode})"
                for c in self._components if c.proc.poll() is not None]

    def start(self) -> ControlPlane:
        if self._started:
            raise ControlPlaneError("this control plane was already started; make a new one")
        self._started = True
        bin_dir = self._bin_dir or binaries_dir()
        _check_binaries(bin_dir)
        self.data_dir = self._make_data_dir()
        _register(self)
        try:
            self._start_retrying_ports(bin_dir)
        except BaseException:
            # KeyboardInterrupt and SystemExit too: never leave half a cluster.
            self.stop()
            raise
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every process (SIGTERM, SIGKILL after ``timeout``) and clean up.

        Safe to call again: it then only catches what a start still running
        (e.g. interrupted by a signal whose handler returned) added since.
        """
        if not self._started:
            return
        self._stopped = True
        _unregister(self)
        self._terminate_all(timeout)
        if not self.keep and hasattr(self, "data_dir"):
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver alone (etcd keeps the data): the cluster is
        unreachable, connections are refused, until :meth:`start_apiserver`."""
        api = [c for c in self._components if c.name == "kube-apiserver"]
        _terminate([c.proc for c in api], STOP_TIMEOUT)
        self._components = [c for c in self._components if c.name != "kube-apiserver"]

    def start_apiserver(self) -> None:
        """Start kube-apiserver again on the same port, with the same data."""
        bin_dir, args = self._api_argv
        api = self._launch(bin_dir, "kube-apiserver", args)
        ctx = self.pki.client_context()
        deadline = time.monotonic() + self.timeout
        while _expect_ok(https_get(f"{self.server}/readyz", ctx)) is not None:
            if api.proc.poll() is not None or time.monotonic() > deadline:
                raise ControlPlaneError(api.failure("kube-apiserver did not come back"))
            time.sleep(0.2)

    def _terminate_all(self, timeout: float) -> None:
        # Clients of etcd first, so they do not spend their shutdown retrying it.
        by_name = {c.name: c.proc for c in self._components}
        for wave in (("kube-controller-manager", "kube-apiserver"), ("etcd",)):
            _terminate([by_name[n] for n in wave if n in by_name], timeout)

    def _make_data_dir(self) -> Path:
        if self._requested_dir is None:
            return Path(tempfile.mkdtemp(prefix="kubectl-gitops-cp-"))
        d = self._requested_dir.resolve()
        if d.exists() and any(d.iterdir()):
            raise ControlPlaneError(f"{d}: data directory is not empty; "
                                    "give a new or empty one (it is deleted on stop)")
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def _start_retrying_ports(self, bin_dir: Path, attempts: int = 3) -> None:
        # A free port is only free until someone else binds it; with several
        # clusters starting at once (parallel test runs) that happens.
        for attempt in range(1, attempts + 1):
            try:
                return self._start(bin_dir)
            except ControlPlaneError as e:
                if attempt == attempts or "address already in use" not in str(e):
                    raise
            self._terminate_all(STOP_TIMEOUT)
            self._components.clear()
            shutil.rmtree(self.data_dir)
            self.data_dir.mkdir(mode=0o700)

    def _start(self, bin_dir: Path) -> None:
        etcd_port, peer_port, api_port, kcm_port = free_ports(4)
        self.pki = make_pki(self.data_dir / "pki")
        self.server = f"https://127.0.0.1:{api_port}"
        etcd_url = f"http://127.0.0.1:{etcd_port}"

        etcd = self._launch(bin_dir, "etcd", self._etcd_args(etcd_url, peer_port))
        self._wait(etcd, "etcd to report healthy", lambda: _etcd_health(etcd_url))

        self._api_argv = (bin_dir, self._apiserver_args(etcd_url, api_port))
        api = self._launch(bin_dir, "kube-apiserver", self._api_argv[1])
        ctx = self.pki.client_context()
        self._wait(api, f"kube-apiserver {self.server}/readyz",
                   lambda: _expect_ok(https_get(f"{self.server}/readyz", ctx)))

        self.kubeconfig = self.data_dir / "kubeconfig"
        write_kubeconfig(self.kubeconfig, self.server, self.pki)

        kcm = self._launch(bin_dir, "kube-controller-manager", self._kcm_args(kcm_port))
        health = f"https://127.0.0.1:{kcm_port}/healthz"
        self._wait(kcm, "kube-controller-manager /healthz",
                   lambda: _expect_ok(https_get(health, _unverified_context())))
        # Controllers really run once the service-account controller has made
        # the default ServiceAccount, which Pods in "default" also need.
        sa = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
        self._wait(kcm, "the default ServiceAccount (made by kube-controller-manager)",
                   lambda: _expect_status(https_get(sa, ctx), 200))

    def _launch(self, bin_dir: Path, name: str, args: list[str]) -> _Component:
        if self._stopped:
            raise ControlPlaneError(f"stopped while starting, before {name}")
        log = self.data_dir / f"{name}.log"
        with _signals_deferred():
            component = _spawn(name, [str(bin_dir / name), *args], log,
                               die_with_parent=self._die_with_parent)
            self._components.append(component)
        return component

    def _wait(self, component: _Component, what: str, probe: Callable[[], str | None]) -> None:
        """Poll ``probe`` (None when satisfied, else why not) until ``timeout``.

        Fails fast, with the log of whichever process died, if one exits.
        """
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while True:
            for c in self._components:
                if c.proc.poll() is not None:
                    why = f"{c.name} exited with status {c.proc.returncode}"
                    raise ControlPlaneError(c.failure(f"{why} while waiting for {what}"))
            why = probe()
            if why is None:
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(component.failure(
                    f"timed out after {self.timeout:.0f}s waiting for {what} ({why})"))
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _etcd_args(self, client_url: str, peer_port: int) -> list[str]:
        peer_url = f"http://127.0.0.1:{peer_port}"
        return [
            "--name=default",
            f"--data-dir={self.data_dir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            # Throwaway data: durability costs seconds of fsync on slow disks.
            "--unsafe-no-fsync",
        ]

    def _apiserver_args(self, etcd_url: str, port: int) -> list[str]:
        pki = self.pki
        return [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The "kubernetes" Service's endpoints may not be loopback, and
            # nothing in this cluster runs pods that would dial them anyway.
            "--endpoint-reconciler-type=none",
            f"--secure-port={port}",
            f"--cert-dir={self.data_dir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_crt}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_crt}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            *self._extra_apiserver_args,
        ]

    def _kcm_args(self, port: int) -> list[str]:
        pki = self.pki
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_crt}",
            f"--cluster-signing-cert-file={pki.ca_crt}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--cluster-name={CLUSTER_NAME}",
            "--use-service-account-credentials=false",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            # Its default is under /usr/libexec, which it would create.
            f"--flex-volume-plugin-dir={self.data_dir / 'flexvolume'}",
            # Every default controller: namespace finalization and garbage
            # collection are what tests rely on.
            "--controllers=*",
        ]


def _etcd_health(url: str) -> str | None:
    status, body = https_get(f"{url}/health")
    if status != 200:
        return _describe((status, body))
    try:
        healthy = json.loads(body).get("health") == "true"
    except ValueError:
        healthy = False
    return None if healthy else body.strip()


def _expect_ok(result: tuple[int, str]) -> str | None:
    return None if result == (200, "ok") else _describe(result)


def _expect_status(result: tuple[int, str], status: int) -> str | None:
    return None if result[0] == status else _describe(result)


def _describe(result: tuple[int, str]) -> str:
    status, body = result
    text = " ".join(body.split())[:300]
    return f"HTTP {status}: {text}" if status else text


def write_kubeconfig(path: Path, server: str, pki: Pki) -> None:
    """An admin kubeconfig with the certificates embedded, so it stands alone."""
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    text = f"""\
apiVersion: v1
kind: Config
clusters:
- name: {CLUSTER_NAME}
  cluster:
    server: {server}
    certificate-authority-data: {b64(pki.ca_crt)}
users:
- name: admin
  user:
    client-certificate-data: {b64(pki.admin_crt)}
    client-key-data: {b64(pki.admin_key)}
contexts:
- name: {CLUSTER_NAME}
  context:
    cluster: {CLUSTER_NAME}
    user: admin
    namespace: default
current-context: {CLUSTER_NAME}
preferences: {{}}
"""
    _write_private(path, text)


def _write_private(path: Path, text: str) -> None:
    # Atomic (readers never see half a file) and 0600 (it holds a key).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Background cluster: up / down / status
#
# `up` runs `_serve` as a detached supervisor (its own session, no parent
# death signal, so it outlives `make`). The supervisor owns a ControlPlane,
# whose processes do die with it, and publishes in the state directory:
#   pid           the supervisor's pid
#   kubeconfig    written once the cluster is ready
#   cluster.json  server, pki paths and component pids, written last
#   serve.log     the supervisor's own output
#   run/          the ControlPlane's data dir (etcd data, component logs)


def default_state_dir() -> Path:
    env = os.environ.get("KUBECTL_GITOPS_CLUSTER_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "kubectl-gitops" / "cluster"


@dataclass(frozen=True)
class StateDir:
    path: Path

    @property
    def pid_file(self) -> Path:
        return self.path / "pid"

    @property
    def kubeconfig(self) -> Path:
        return self.path / "kubeconfig"

    @property
    def cluster_json(self) -> Path:
        return self.path / "cluster.json"

    @property
    def log(self) -> Path:
        return self.path / "serve.log"

    @property
    def run_dir(self) -> Path:
        return self.path / "run"

    def supervisor_pid(self) -> int | None:
        """The recorded supervisor's pid, if that process is still our supervisor."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_supervisor(pid) else None

    def cluster(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.cluster_json.read_text())
        except (OSError, ValueError):
            return None

    def ready(self) -> bool:
        info = self.cluster()
        if info is None or not self.kubeconfig.exists():
            return False
        return apiserver_ready(info["server"], Pki(Path(info["pki"])))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        # One `up`/`down` at a time, so two callers never start two clusters.
        import fcntl  # POSIX only, like the rest of this module

        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def clear(self) -> None:
        for f in (self.cluster_json, self.kubeconfig, self.pid_file):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (an init that never reaps keeps them).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


# This module's name, and its name before it left the product package: a
# cluster an older checkout started is still ours to stop.
SUPERVISOR_MODULES = ("testing.controlplane", "kubectl_gitops.controlplane")


def _is_supervisor(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    argv = _cmdline(pid)
    # Without /proc we cannot tell a reused pid apart; trust the pid file.
    return not argv or (any(m in argv for m in SUPERVISOR_MODULES) and "_serve" in argv)


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if pid_alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if pid_alive(p)]
    return left


def cmd_up(state: StateDir, timeout: float) -> int:
    with state.locked():
        pid = state.supervisor_pid()
        # A running cluster may answer slowly on a busy machine, and one still
        # starting (an earlier `up` was interrupted) will be ready soon: wait
        # rather than replace a cluster someone may be using.
        if pid is not None and _becomes_ready(state, pid, timeout):
            print(f"reusing the control plane in {state.path} (pid {pid})", file=sys.stderr)
            print(state.kubeconfig)
            return exitcodes.OK
        if pid is not None:
            print(f"replacing the unresponsive control plane (pid {pid})", file=sys.stderr)
            _stop_supervisor(state, pid)
        state.clear()
        bin_dir = binaries_dir()
        start = time.monotonic()
        pid = _spawn_supervisor(state, bin_dir, timeout)
        # The supervisor has its own per-step timeouts; this is a backstop.
        if not _becomes_ready(state, pid, timeout * 3 + 30):
            _stop_supervisor(state, pid)
            state.clear()
            # A few more lines than usual: the supervisor's own error heads them.
            log_tail = tail_file(state.log, LOG_TAIL_LINES + 5)
            raise ControlPlaneError(f"the control plane did not start; "
                                    f"last lines of {state.log}:\n{log_tail}")
        print(f"control plane ready in {time.monotonic() - start:.1f}s "
              f"(pid {pid}, logs in {state.path})", file=sys.stderr)
        print(state.kubeconfig)
        return exitcodes.OK


def _spawn_supervisor(state: StateDir, bin_dir: Path, timeout: float) -> int:
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "testing.controlplane", "_serve",
            "--state-dir", str(state.path), "--bin-dir", str(bin_dir), "--timeout", str(timeout)]
    with state.log.open("wb") as log:
        # Detached: own session, stdio off the caller's pipes (else `make`
        # or `$(...)` would wait for it), cwd that pins no directory.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd="/", env=env)
    state.pid_file.write_text(f"{proc.pid}\n")
    # We leave it running on purpose (init adopts it when we exit): mark the
    # Popen finished so it neither warns about nor tries to reap it.
    proc.returncode = 0
    return proc.pid


def _becomes_ready(state: StateDir, pid: int, timeout: float) -> bool:
    """Whether the supervisor's cluster answers /readyz before ``timeout``."""
    deadline = time.monotonic() + timeout
    while not state.ready():
        if not pid_alive(pid) or time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _stop_supervisor(state: StateDir, pid: int) -> None:
    info = state.cluster() or {}
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone([pid], STOP_TIMEOUT * 2):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone([pid], 5)
    # The components die with the supervisor (parent-death signal); this
    # catches a platform without it, checking each pid still runs our binary.
    leftovers = [p for name, p in info.get("pids", {}).items()
                 if pid_alive(p) and _cmdline(p)[:1] == [str(Path(info["bin_dir"]) / name)]]
    for p in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    if _wait_gone(leftovers, 5):
        raise ControlPlaneError(f"could not stop processes {leftovers}")


def cmd_down(state: StateDir) -> int:
    with state.locked():
        pid = state.supervisor_pid()
        if pid is None:
            state.clear()
            print(f"no control plane running in {state.path}", file=sys.stderr)
            return exitcodes.OK
        _stop_supervisor(state, pid)
        state.clear()
        print(f"stopped the control plane in {state.path} (pid {pid})", file=sys.stderr)
        return exitcodes.OK


def cmd_status(state: StateDir) -> int:
    pid = state.supervisor_pid()
    info = state.cluster()
    if pid is None:
        print(f"not running ({state.path})")
        return 1
    if info is None or not state.ready():
        print(f"starting or unhealthy: supervisor pid {pid}; see {state.log}")
        return 1
    pids = " ".join(f"{name}={p}" for name, p in info["pids"].items())
    print(f"running: {info['server']} supervisor={pid} {pids}")
    print(state.kubeconfig)
    return exitcodes.OK


class _Stop(Exception):
    """Raised from the supervisor's signal handler to unwind and stop."""


def cmd_serve(state: StateDir, bin_dir: Path, timeout: float) -> int:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    cp = ControlPlane(bin_dir=bin_dir, data_dir=state.run_dir, timeout=timeout)
    try:
        start = time.monotonic()
        cp.start()
        print(f"started in {time.monotonic() - start:.1f}s: {cp.server}", flush=True)
        _publish(state, cp, bin_dir)
        while not cp.dead():
            time.sleep(1)
        print(f"stopping: {', '.join(cp.dead())} exited", flush=True)
        return exitcodes.ERROR
    except _Stop as e:
        print(f"stopping on {e}", flush=True)
        return exitcodes.OK
    except ControlPlaneError as e:
        print(f"error: {e}", flush=True)
        return exitcodes.ERROR
    finally:
        cp.stop()
        for f in (state.cluster_json, state.kubeconfig):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        print("stopped", flush=True)


def _publish(state: StateDir, cp: ControlPlane, bin_dir: Path) -> None:
    _write_private(state.kubeconfig, cp.kubeconfig.read_text())
    info = {"server": cp.server, "pki": str(cp.pki.dir), "bin_dir": str(bin_dir),
            "pids": cp.pids, "logs": {k: str(v) for k, v in cp.logs.items()}}
    # Written last: its presence (plus /readyz) is what `up` waits for.
    _write_private(state.cluster_json, json.dumps(info, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testing.controlplane",
        description="Run etcd, kube-apiserver and kube-controller-manager in the background.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start (or reuse) it; print the kubeconfig path last"),
                       ("down", "stop it"), ("status", "report whether it runs"),
                       ("_serve", argparse.SUPPRESS)):
        p = sub.add_parser(name, help=text)
        p.add_argument("--state-dir", type=Path, default=None, help=(
            "default: $KUBECTL_GITOPS_CLUSTER_DIR or ~/.cache/kubectl-gitops/cluster"))
        if name in ("up", "_serve"):
            p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                           help="seconds allowed for each start-up step")
        if name == "_serve":
            p.add_argument("--bin-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    state = StateDir((args.state_dir or default_state_dir()).resolve())
    try:
        if args.command == "up":
            return cmd_up(state, args.timeout)
        if args.command == "down":
            return cmd_down(state)
        if args.command == "status":
            return cmd_status(state)
        return cmd_serve(state, args.bin_dir, args.timeout)
    except GitOpsError as e:
        print(f"controlplane: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

"""Real components for Helm and SOPS sources: the helm, sops, age and crane
executables (tools/build-sourcetools.sh builds them into the cache), the
upstream charts it unpacks, a chart repository served over HTTP on loopback,
an OCI registry (``crane registry serve``) and age keys made in the test."""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "tools" / "build-sourcetools.sh"
TARGETS = ("helm", "age", "crane", "charts")


@functools.cache
def _built() -> dict[str, Path]:
    """What the build script made (building it the first time): target -> dir."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT), *TARGETS], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or len(lines) != len(TARGETS):
        raise RuntimeError(f"{BUILD_SCRIPT} failed with status {done.returncode}")
    return {t: Path(line) for t, line in zip(TARGETS, lines)}


def tool_path(base: str | None = None) -> str:
    """PATH with the venv's bin (kubectl, sops, this package) and helm, age and
    crane first."""
    dirs = [str(Path(sys.executable).parent)] + [str(_built()[t]) for t in TARGETS[:3]]
    return os.pathsep.join(dirs + [base if base is not None else os.environ.get("PATH", "")])


def tool_env(env: dict[str, str] | None = None) -> dict[str, str]:
    out = dict(os.environ if env is None else env)
    out["PATH"] = tool_path(out.get("PATH", ""))
    return out


def upstream_chart(name: str, version: str) -> Path:
    """An upstream chart as its project publishes it (read only: copy to change)."""
    path = _built()["charts"] / f"{name}-{version}"
    if not (path / "Chart.yaml").is_file():
        raise FileNotFoundError(f"{path}: not unpacked by {BUILD_SCRIPT}")
    return path


def run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def package(chart: Path, dest: Path, env: dict[str, str], *, version: str | None = None) -> Path:
    """``helm package`` a chart directory into ``dest``; the archive's path."""
    dest.mkdir(parents=True, exist_ok=True)
    args = ["helm", "package", str(chart), "-d", str(dest)]
    out = run(args + (["--version", version] if version else []), env)
    found = re.search(r"saved it to: (\S+\.tgz)", out)
    assert found, out
    return Path(found.group(1))


def copy_chart(chart: Path, dest: Path) -> Path:
    """A writable copy of a chart, to derive a variant from it."""
    shutil.copytree(chart, dest)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    return dest


class ChartRepo:
    """A Helm chart repository: packaged charts and ``index.yaml`` (made by
    ``helm repo index``) served by a real HTTP server on loopback. With
    ``auth=(user, password)`` it asks for basic auth; ``requests`` lists
    every path asked for, in order."""

    def __init__(self, directory: Path, env: dict[str, str],
                 auth: tuple[str, str] | None = None) -> None:
        self.dir = directory
        self.env = env
        self.requests: list[str] = []
        directory.mkdir(parents=True, exist_ok=True)
        repo = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
                super().__init__(*a, directory=str(directory), **kw)

            def do_GET(self) -> None:
                repo.requests.append(self.path)
                if auth and not self._authorized(auth):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="charts"')
                    self.end_headers()
                    return
                super().do_GET()

            def _authorized(self, auth: tuple[str, str]) -> bool:
                import base64

                want = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                return self.headers.get("Authorization") == f"Basic {want}"

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, chart: Path, *, version: str | None = None) -> Path:
        """Package ``chart`` into the repository and index it again."""
        tgz = package(chart, self.dir, self.env, version=version)
        run(["helm", "repo", "index", str(self.dir), "--url", self.url], self.env)
        return tgz

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def chart_repo(directory: Path, env: dict[str, str],
               auth: tuple[str, str] | None = None) -> Iterator[ChartRepo]:
    repo = ChartRepo(directory, env, auth)
    try:
        yield repo
    finally:
        repo.close()


class OciRegistry:
    """``crane registry serve`` on loopback: a real OCI distribution registry.
    ``push`` runs ``helm push`` to it (plain HTTP, as on loopback)."""

    def __init__(self, storage: Path, env: dict[str, str]) -> None:
        self.env = env
        storage.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            ["crane", "registry", "serve", "--address", "127.0.0.1:0", "--disk", str(storage)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        port = None
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            found = re.search(r"serving on port (\d+)", line)
            if found:
                port = found.group(1)
                break
        if port is None:
            self._proc.kill()
            raise RuntimeError("crane registry serve did not start")
        self._log: list[str] = []
        # Read its log all along (so it never blocks on a full pipe): one
        # line per request, "GET /v2/...".
        threading.Thread(target=self._read_log, daemon=True).start()
        self.host = f"127.0.0.1:{port}"

    def _read_log(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._log.append(line.rstrip("\n"))

    def requests(self) -> list[str]:
        """Every request the registry served so far (method and path)."""
        return [m.group(0) for line in list(self._log)
                if (m := re.search(r"(GET|HEAD|PUT|POST|PATCH|DELETE) /v2/\S*", line))]

    def push(self, tgz: Path, project: str = "charts") -> str:
        """Push a packaged chart; the ``oci://`` URL of its repository (no name)."""
        url = f"oci://{self.host}/{project}"
        run(["helm", "push", str(tgz), url, "--plain-http"], self.env)
        return url

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@contextmanager
def oci_registry(storage: Path, env: dict[str, str]) -> Iterator[OciRegistry]:
    reg = OciRegistry(storage, env)
    try:
        yield reg
    finally:
        reg.close()


def age_key(path: Path, env: dict[str, str]) -> str:
    """A new age identity written to ``path`` (by age-keygen); its recipient."""
    run(["age-keygen", "-o", str(path)], env)
    return run(["age-keygen", "-y", str(path)], env).strip()


def sops_encrypt(path: Path, recipient: str, env: dict[str, str], *,
                 encrypted_regex: str | None = None) -> bytes:
    """The file at ``path`` encrypted by the real sops for ``recipient``."""
    args = ["sops", "--encrypt", "--age", recipient]
    if encrypted_regex:
        args += ["--encrypted-regex", encrypted_regex]
    done = subprocess.run(args + [str(path)], env=env, capture_output=True)
    if done.returncode != 0:
        raise AssertionError(f"sops --encrypt {path} failed: {done.stderr.decode()}")
    return done.stdout

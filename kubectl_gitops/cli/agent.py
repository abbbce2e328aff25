"""``kubectl gitops agent``: the pull model, and ``agent manifests``."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kubectl_gitops import exitcodes
from kubectl_gitops.cli.common import cluster_options, handle_errors, run

if TYPE_CHECKING:
    from kubectl_gitops.agent.config import AppSpec
    from kubectl_gitops.kube.kubeconfig import Overrides

_CTX = {"help_option_names": ["-h", "--help"]}


def _app_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--repo", metavar="URL", help="Git URL or path of one app (https://, "
                     "ssh://, git@host:, file://, a local path)."),
        click.option("--ref", default="HEAD", show_default=True, metavar="BRANCH",
                     help="Branch, tag or commit to follow."),
        click.option("--path", metavar="DIR", help="Directory inside the repo (default: "
                     "path: from .gitops.yaml, else the root)."),
        click.option("--name", metavar="NAME", help="Application / ApplySet name (default: "
                     "the repo's name)."),
        click.option("--interval", default="1m", show_default=True,
                     help="How often to fetch (30s, 5m, 1h)."),
        click.option("--prune", is_flag=True, help="Delete members git no longer holds."),
        click.option("--self-heal", is_flag=True, help="Re-apply members that drift."),
        click.option("--decryption-secret", metavar="[NS/]NAME", help="A Secret whose "
                     "*.agekey entries decrypt the app's SOPS files (default namespace: "
                     "the app's)."),
        click.option("--kubeconfig-secret", metavar="[NS/]NAME", help="Hub mode: sync the "
                     "app to the cluster of the kubeconfig in this Secret (of the agent's "
                     "cluster; default namespace: the agent's); its Lease, status and Events "
                     "live there."),
    ]):
        fn = opt(fn)
    return fn


def _specs(config: str | None, repo: str | None, ref: str, path: str | None,
           name: str | None, namespace: str | None, interval: str, prune: bool,
           self_heal: bool, decryption_secret: str | None = None,
           kubeconfig_secret: str | None = None) -> list[AppSpec]:
    from kubectl_gitops.agent import config as cfg  # noqa: PLC0415

    if config and repo:
        raise click.UsageError("give apps either with --config or with --repo, not both")
    if config:
        return cfg.load(Path(config))
    if not repo:
        raise click.UsageError("give an app with --repo URL, or apps with --config FILE")
    return [cfg.AppSpec(name=name or cfg.name_from_url(repo), repo=repo, ref=ref, path=path,
                        namespace=namespace, interval=cfg.duration(interval, "--interval"),
                        prune=prune, self_heal=self_heal, named=bool(name),
                        decryption_secret=decryption_secret,
                        kubeconfig_secret=cfg.secret_ref(kubeconfig_secret,
                                                         "--kubeconfig-secret"))]


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
               "level": record.levelname.lower(), "msg": record.getMessage(),
               "logger": record.name}
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(doc)


def _logging(fmt: str, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Json() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("kubectl-gitops")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    try:
        return host or "0.0.0.0", int(port)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not ADDRESS:PORT") from None


@click.group(invoke_without_command=True, context_settings=_CTX)
@_app_options
@cluster_options
@click.option("--config", "config", metavar="FILE", help="agent.yaml: a list of apps "
              "(reloaded when it changes or on SIGHUP).")
@click.option("--cache-dir", metavar="DIR", help="Where the git mirrors live (default: "
              "$XDG_CACHE_HOME/kubectl-gitops/agent).")
@click.option("--listen", default="0.0.0.0:8080", show_default=True, metavar="ADDR:PORT",
              help="/healthz, /readyz, /metrics and the webhook; port 0 turns them off.")
@click.option("--webhook-secret-file", metavar="FILE", help="Shared secret of POST /hooks/git "
              "(without it the webhook is off).")
@click.option("--git-token-file", metavar="FILE", help="A token for https git hosts, read "
              "by a git credential helper (never logged).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--debounce", default="1s", show_default=True,
              help="Wait after a member changes before looking at it.")
@click.option("--heal-backoff", default="5s", show_default=True, help="Wait before correcting "
              "one object a second time; doubles each time, up to 5m.")
@click.option("--lease-duration", type=click.IntRange(2, 3600), default=15, show_default=True,
              help="Seconds a replica may go silent before the others take over its apps.")
@click.option("--lease-namespace", metavar="NS", help="Where the replicas keep their Leases "
              "(default: $POD_NAMESPACE, else -n, else the context's namespace).")
@click.option("--replica-group", metavar="NAME", help="Replicas of one group divide its "
              "apps between them (default: a hash of --config's path, or of --repo, --name "
              "and -n).")
@click.pass_context
@handle_errors
def command(ctx: click.Context, repo: str | None, ref: str, path: str | None,
            name: str | None, interval: str, prune: bool, self_heal: bool,
            decryption_secret: str | None, kubeconfig_secret: str | None,
            cluster: Overrides, namespace: str | None, config: str | None, cache_dir: str | None, listen: str,
            webhook_secret_file: str | None, git_token_file: str | None, log_format: str,
            workers: int, debounce: str, heal_backoff: str, lease_duration: int,
            lease_namespace: str | None, replica_group: str | None) -> int:
    """Pull and converge: fetch git every interval (or on the webhook), sync new
    revisions, watch the members and report or correct drift.

    Replicas divide the apps between them (one Lease each in --lease-namespace);
    an app's own Lease is taken only for a write. Runs until SIGTERM or Ctrl-C
    (the write in flight finishes first).
    """
    if ctx.invoked_subcommand:
        return exitcodes.OK
    from kubectl_gitops.agent import config as cfg  # noqa: PLC0415
    from kubectl_gitops.agent import runner, server  # noqa: PLC0415
    from kubectl_gitops.agent.metrics import CountingKube  # noqa: PLC0415

    _logging(log_format, cluster.verbosity >= 4)  # -v 4: the agent's debug lines
    specs = _specs(config, repo, ref, path, name, namespace, interval, prune, self_heal,
                   decryption_secret, kubeconfig_secret)
    cache = Path(cache_dir or _cache_dir())
    secret = _secret(webhook_secret_file) if webhook_secret_file else None
    settings = runner.Settings(cache=cache, workers=workers,
                               debounce=cfg.duration(debounce, "--debounce"),
                               heal_backoff=cfg.duration(heal_backoff, "--heal-backoff"),
                               lease_duration=lease_duration, token_file=git_token_file)
    kube = CountingKube(cluster)
    settings.lease_namespace = (lease_namespace or os.environ.get("POD_NAMESPACE") or namespace
                                or kube.info.namespace or "default")
    settings.group = _group(replica_group, config, repo, name, namespace)
    agent = runner.Agent(kube, specs, settings)
    host, port = _listen(listen)
    httpd = server.serve(agent, host, port, secret) if port else None
    return _run(agent, config, specs) if httpd is None else _serving(agent, httpd, config, specs)


def _group(given: str | None, config: str | None, repo: str | None, name: str | None,
           namespace: str | None) -> str:
    """The replicas' group: given, or the same for replicas of one configuration."""
    import hashlib  # noqa: PLC0415

    if given:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", given):
            raise click.BadParameter("lowercase letters, digits and '-', up to 40",
                                     param_hint="--replica-group")
        return given
    what = f"config:{Path(config).resolve()}" if config else f"repo:{repo}|{name}|{namespace}"
    return hashlib.sha256(what.encode()).hexdigest()[:12]


def _cache_dir() -> str:
    """Where the agent keeps its git mirrors by default."""
    from kubectl_gitops import diskcache  # noqa: PLC0415
    from kubectl_gitops.errors import ConfigError  # noqa: PLC0415

    cache = diskcache.directory("agent")
    if cache is None:
        raise ConfigError("no cache directory ($XDG_CACHE_HOME, else $HOME, is not an "
                          "absolute path); give one with --cache-dir")
    return cache


def _secret(path: str) -> bytes:
    from kubectl_gitops.errors import ConfigError  # noqa: PLC0415

    try:
        secret = Path(path).read_bytes().strip()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the webhook secret: {e.strerror}") from e
    if not secret:
        raise ConfigError(f"{path}: the webhook secret is empty")
    return secret


def _serving(agent: Any, httpd: Any, config: str | None, specs: list[AppSpec]) -> int:
    logging.getLogger("kubectl-gitops.agent").info(
        "listening on %s:%d", *httpd.server_address[:2])
    try:
        return _run(agent, config, specs)
    finally:
        httpd.shutdown()


def _run(agent: Any, config: str | None, specs: list[AppSpec]) -> int:
    """Start, then wait for a signal: TERM/INT stop, HUP reloads the config."""
    from kubectl_gitops.agent import config as cfg  # noqa: PLC0415
    from kubectl_gitops.errors import GitOpsError  # noqa: PLC0415

    log = logging.getLogger("kubectl-gitops.agent")
    stop, reload = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    agent.kube.resource_types()  # the cluster answers: ready
    agent.start()
    agent.ready.set()
    log.info("agent %s: %d app(s): %s", agent.identity, len(specs),
             ", ".join(s.name for s in specs))
    mtime = _mtime(config)
    while not stop.wait(1.0):
        if config and (reload.is_set() or _mtime(config) != mtime):
            reload.clear()
            mtime = _mtime(config)
            try:
                agent.set_apps(cfg.load(Path(config)))
                log.info("reloaded %s", config)
            except GitOpsError as e:
                log.error("not reloaded: %s (the apps keep running as they were)", e)
    log.info("stopping: finishing the writes in flight")
    agent.stop()
    log.info("stopped")
    return exitcodes.OK


def _mtime(path: str | None) -> float:
    try:
        return os.stat(path).st_mtime if path else 0.0
    except OSError:
        return 0.0


@command.command("manifests", context_settings=_CTX)
@_app_options
@click.option("-n", "--namespace", default="kubectl-gitops", show_default=True,
              help="The agent's namespace (and, with --namespaced, the only one it may write).")
@click.option("--cluster-wide/--namespaced", default=True, show_default=True,
              help="RBAC for apps anywhere (a ClusterRole), or only in --namespace (a Role).")
@click.option("--image", metavar="IMAGE", help="The agent's image (built from the "
              "Containerfile).")
@handle_errors
def manifests_command(repo: str | None, ref: str, path: str | None, name: str | None,
                      interval: str, prune: bool, self_heal: bool,
                      decryption_secret: str | None, kubeconfig_secret: str | None,
                      namespace: str, cluster_wide: bool, image: str | None) -> int:
    """Print what running the agent in a cluster takes (apply with kubectl apply -f -)."""
    import yaml  # noqa: PLC0415

    from kubectl_gitops.agent import install  # noqa: PLC0415

    app: dict[str, Any] = {"name": name or "my-app", "repo": repo or
                           "https://git.example.com/team/deploy.git", "ref": ref,
                           "interval": interval, "prune": prune, "selfHeal": self_heal}
    if path:
        app["path"] = path
    if decryption_secret:
        app["decryptionSecret"] = decryption_secret
    if kubeconfig_secret:
        app["kubeConfigSecret"] = kubeconfig_secret
    if not cluster_wide:
        app["namespace"] = namespace  # a namespaced agent may write only there
    config = yaml.safe_dump({"apps": [app]}, sort_keys=False)
    objs = install.manifests(namespace, cluster_wide=cluster_wide, config=config,
                             **({"image": image} if image else {}))
    click.echo(yaml.safe_dump_all(objs, sort_keys=False), nl=False)
    return exitcodes.OK


def main() -> None:
    run(command, "kubectl gitops agent")

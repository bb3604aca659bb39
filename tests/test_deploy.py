"""The Kubernetes manifests (deploy/kubernetes/) and the Dockerfile: what they promise holds.

The manifests parse, validate against Kubernetes' own JSON schemas (kubernetes-validate bundles
them: no cluster, no network), reference what exists (service account, config map keys, volumes,
the image name the kustomization rewrites), run as the locked-down user the Dockerfile makes,
and their command line is one sar-bulk accepts: it is parsed by the real parser and resolved with
the ConfigMap's TOML. The nightly CronJob's two identities are parsed by sar-bulk's own code
with the pod's environment (its env lines and what the workload identity webhook injects), and
so is the credential its Blob Storage output gets. Last, that command line is run against the
simulator and stopped with SIGTERM, as the kubelet does: it must end within the manifests'
grace period, with exit 143, its report and its metrics textfile written.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cli_support import FAST, start_cli, token_env
from prometheus_client.parser import text_string_to_metric_families
from support import contact_ids, dossier_names, read_report, write_csv

from sar_bulk.cli import _parser
from sar_bulk.config import RUN_OPTIONS, RunConfig, parse_identities, resolve
from sar_bulk.dataverse.auth import AuthKind, build_credential
from sar_bulk.output.blob import CONNECTION_STRING_ENV, SAS_TOKEN_ENV, storage_credential
from sar_bulk.output.url import ContainerUrl
from sar_bulk.run.identities import identity_environ
from sar_bulk.run.runner import ExitCode
from sar_bulk.run.sharding import Shard
from sar_bulk.simulator import Simulator, SimulatorConfig

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
IMAGE = "sar-bulk"  # what the manifests say; kustomization.yaml maps it to a registry
USER = 10001
POD_TMP = "/tmp"  # noqa: S108 - a path inside the pod: an emptyDir of its own
GRACE = 60  # seconds: the measured stop takes well under one (see job-indexed.yaml)
# The oldest Kubernetes with every field used (podFailurePolicy is GA in 1.31), and the newest.
VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
# What the Azure Workload Identity webhook adds to a pod labelled azure.workload.identity/use:
# AZURE_CLIENT_ID is the service account's annotation, filled in by _pod_environ.
WEBHOOK: dict[str, str] = {
    "AZURE_CLIENT_ID": "",
    "AZURE_TENANT_ID": "00000000-0000-0000-0000-0000000000aa",
    "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com/",
    "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
}
GUID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")
EXPECTED = {
    "serviceaccount.yaml": ("v1", "ServiceAccount"),
    "configmap.yaml": ("v1", "ConfigMap"),
    "pvc.yaml": ("v1", "PersistentVolumeClaim"),
    "cronjob.yaml": ("batch/v1", "CronJob"),
    "job-indexed.yaml": ("batch/v1", "Job"),
    "kustomization.yaml": ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
}


def _documents(name: str) -> list[dict[str, Any]]:
    with (DEPLOY / name).open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def _one(name: str) -> dict[str, Any]:
    (document,) = _documents(name)
    return document


def _pod_specs() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(file, job spec, pod template) of the Job and of the CronJob's job template."""
    job = _one("job-indexed.yaml")
    yield "job-indexed.yaml", job["spec"], job["spec"]["template"]
    cron = _one("cronjob.yaml")["spec"]["jobTemplate"]
    yield "cronjob.yaml", cron["spec"], cron["spec"]["template"]


def _container(template: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = template["spec"]["containers"]
    assert len(containers) == 1, "one container: sar-bulk (sidecars are injected, not declared)"
    return containers[0]


def _flag(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, f"{flag} given {args.count(flag)} times in {args}"
    return args[args.index(flag) + 1]


def _service_account_client_id() -> str:
    annotations = _one("serviceaccount.yaml")["metadata"]["annotations"]
    client_id: str = annotations["azure.workload.identity/client-id"]
    return client_id


def _pod_environ(template: dict[str, Any]) -> dict[str, str]:
    """The container's environment in the pod: its env lines (ConfigMap keys looked up, as the
    kubelet does) and what the webhook injects."""
    config_map = _one("configmap.yaml")
    environ = WEBHOOK | {"AZURE_CLIENT_ID": _service_account_client_id()}
    for item in _container(template)["env"]:
        if "value" in item:
            environ[item["name"]] = item["value"]
        elif "configMapKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["configMapKeyRef"]
            assert ref["name"] == config_map["metadata"]["name"], item["name"]
            assert ref["key"] in config_map["data"], f"{item['name']}: no key {ref['key']}"
            environ[item["name"]] = config_map["data"][ref["key"]]
    return environ


def _run_config(
    tmp_path: Path, name: str, environ: dict[str, str]
) -> tuple[dict[str, Any], RunConfig]:
    """The manifest's args through sar-bulk's own parser, with the ConfigMap's file."""
    template = next(t for n, _, t in _pod_specs() if n == name)
    args = _container(template)["args"]
    assert args[0] == "run"
    config_path = Path(_flag(args, "--config"))
    assert config_path.parent == Path("/config")
    files = _one("configmap.yaml")["data"]
    assert config_path.name in files
    local = tmp_path / config_path.name
    local.write_text(files[config_path.name], encoding="utf-8")
    parsed = _parser().parse_args(args)
    flags = {option.name: getattr(parsed, option.name, None) for option in RUN_OPTIONS}
    settings = resolve(RUN_OPTIONS, flags=flags, environ=environ, config_file=local)
    return settings, RunConfig.from_settings(settings, environ)


def test_every_file_parses_and_has_its_kind() -> None:
    assert {p.name for p in DEPLOY.glob("*.yaml")} == set(EXPECTED)
    for name, (api_version, kind) in EXPECTED.items():
        document = _one(name)
        assert (document["apiVersion"], document["kind"]) == (api_version, kind), name


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"kustomization.yaml"}))
def test_manifests_validate_against_the_kubernetes_schemas(name: str, version: str) -> None:
    for document in _documents(name):
        # strict: a misspelt or misplaced field is an error, not silently ignored.
        kubernetes_validate.validate(document, version, strict=True)


def test_the_kustomization_ties_every_manifest_and_names_the_image() -> None:
    kustomization = _one("kustomization.yaml")
    assert set(kustomization["resources"]) == set(EXPECTED) - {"kustomization.yaml"}
    (image,) = kustomization["images"]
    assert image["name"] == IMAGE
    assert image["newName"].endswith("/sar-bulk")
    for name, _, template in _pod_specs():
        assert _container(template)["image"] == IMAGE, name


def test_pods_use_the_workload_identity_service_account() -> None:
    account = _one("serviceaccount.yaml")
    client_id = account["metadata"]["annotations"]["azure.workload.identity/client-id"]
    assert GUID.fullmatch(client_id)
    for name, _, template in _pod_specs():
        assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true", name
        assert template["spec"]["serviceAccountName"] == account["metadata"]["name"], name
        assert template["spec"]["automountServiceAccountToken"] is False, name
        args = _container(template)["args"]
        assert _flag(args, "--auth") == "workload-identity", name


def test_pods_are_locked_down_and_write_only_to_their_volumes() -> None:
    for name, _, template in _pod_specs():
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == USER, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        container = _container(template)
        assert container["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": USER,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert set(mounts.values()) == set(volumes), f"{name}: unmounted or missing volumes"
        assert "emptyDir" in volumes[mounts[POD_TMP]], name
        assert volumes[mounts["/config"]]["configMap"]["name"] == "sar-bulk-config", name
        claim = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
        assert claim == _one("pvc.yaml")["metadata"]["name"], name
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["SQLITE_TMPDIR"] == POD_TMP, name
        resources = container["resources"]
        assert resources["requests"] == {
            "cpu": "250m",
            "memory": "256Mi",
            "ephemeral-storage": "256Mi",
        }, name
        assert resources["limits"]["memory"] == "512Mi", name


def test_jobs_are_bounded_in_retries_time_and_lifetime() -> None:
    for name, job, template in _pod_specs():
        assert template["spec"]["terminationGracePeriodSeconds"] == GRACE, name
        assert template["spec"]["restartPolicy"] == "Never", name
        assert 0 < job["backoffLimit"] <= 10, name
        assert 3600 <= job["activeDeadlineSeconds"] <= 86400, name
        assert job["ttlSecondsAfterFinished"] > 0, name
        # Usage errors and refused identities would only fail again: no retry for those.
        (fail_job,) = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
        assert fail_job["onExitCodes"]["values"] == [ExitCode.USAGE, ExitCode.REFUSED], name
    cron = _one("cronjob.yaml")["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    job = _one("job-indexed.yaml")["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["suspend"] is True, "kubectl apply -k must not start a sharded run by itself"


def test_metrics_are_declared_and_announced() -> None:
    for name, _, template in _pod_specs():
        container = _container(template)
        args = container["args"]
        port = int(_flag(args, "--metrics-port"))
        (declared,) = container["ports"]
        assert (declared["name"], declared["containerPort"]) == ("metrics", port), name
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert int(annotations["prometheus.io/port"]) == port, name
        assert annotations["prometheus.io/path"] == "/metrics", name
        assert _flag(args, "--metrics-host") == "0.0.0.0", name  # noqa: S104 - the pod's IP
        textfile = _flag(args, "--metrics-textfile")
        assert Path(textfile).parent == Path("/data"), name
        assert textfile.endswith(".prom"), name


@pytest.mark.parametrize(
    ("name", "key", "shards"),
    [
        ("job-indexed.yaml", "shards.toml", 4),
        ("cronjob.yaml", "nightly.toml", None),
    ],
)
def test_the_command_line_is_one_sar_bulk_accepts(
    tmp_path: Path, name: str, key: str, shards: int | None
) -> None:
    """The manifest's args through sar-bulk's own parser, with the ConfigMap's file."""
    template = next(t for n, _, t in _pod_specs() if n == name)
    assert Path(_flag(_container(template)["args"], "--config")).name == key
    assert key in _one("configmap.yaml")["data"]
    environ = {"JOB_COMPLETION_INDEX": "2"}
    settings, config = _run_config(tmp_path, name, environ)
    assert config.auth.value == "workload-identity"
    assert config.out.parent == Path("/data")
    assert Path(config.contacts).parent == Path("/data")
    if shards is None:
        assert config.shard is None
    else:
        job = _one(name)["spec"]
        assert job["completions"] == job["parallelism"] == shards
        assert config.shard == Shard(2, shards)
        assert "$(SHARD_INDEX)" in settings["metrics_textfile"].name
        env = {item["name"]: item for item in _container(template)["env"]}
        path = env["SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert path == "metadata.annotations['batch.kubernetes.io/job-completion-index']"


async def test_the_nightly_runs_two_identities_and_writes_to_blob_storage(
    tmp_path: Path,
) -> None:
    """Issue 11: two workload identities for Dataverse, dossiers to a container, state on the PVC.

    Through sar-bulk's own code: ``parse_identities`` and ``RunConfig.from_settings`` on the
    ConfigMap's TOML, ``identity_environ`` and ``build_credential`` on the pod's environment,
    ``storage_credential`` as ``cli._run`` calls it with ``[[identities]]`` (``config.auth``
    and the whole process environment).
    """
    template = next(t for n, _, t in _pod_specs() if n == "cronjob.yaml")
    container = _container(template)
    declared = {item["name"] for item in container["env"]}
    # The webhook does not overwrite variables the container declares: none of its own here.
    assert not declared & set(WEBHOOK), "the webhook's AZURE_* variables are not declared"
    environ = _pod_environ(template)
    assert not {CONNECTION_STRING_ENV, SAS_TOKEN_ENV} & set(environ), "the --auth path is meant"
    document = tomllib.loads(_one("configmap.yaml")["data"]["nightly.toml"])
    specs = parse_identities(document["identities"], Path("/config/nightly.toml"))
    _, config = _run_config(tmp_path, "cronjob.yaml", environ)
    assert config.identities == specs
    assert [spec.name for spec in specs] == ["app-a", "app-b"]
    client_ids = []
    for spec in specs:
        assert spec.auth is AuthKind.WORKLOAD_IDENTITY, spec.name
        # One projected token for both: unmapped, the file would be hidden from the identity.
        assert spec.env["AZURE_FEDERATED_TOKEN_FILE"] == "AZURE_FEDERATED_TOKEN_FILE", spec.name
        for standard, own in spec.env.items():
            # Set in the pod spec (or by the webhook): else the run stops with exit 2.
            assert own in declared or own in WEBHOOK, f"{spec.name}: env.{standard} = {own}"
        own_environ = identity_environ(spec, environ)
        assert own_environ["AZURE_FEDERATED_TOKEN_FILE"] == WEBHOOK["AZURE_FEDERATED_TOKEN_FILE"]
        assert own_environ["AZURE_TENANT_ID"] == WEBHOOK["AZURE_TENANT_ID"]  # shared
        assert GUID.fullmatch(own_environ["AZURE_CLIENT_ID"]), spec.name
        client_ids.append(own_environ["AZURE_CLIENT_ID"])
        credential = build_credential(spec.auth, own_environ)
        assert type(credential).__name__ == "WorkloadIdentityCredential", spec.name
        await credential.close()
    assert len(set(client_ids)) == 2, "two identities with one client id are one identity"
    # Dossiers and the report go to the container; the work folder (state, staging) to the PVC.
    url = ContainerUrl.parse(document["run"]["out"])
    assert config.blob == url
    assert url.account_url.startswith("https://")
    assert url.account_url.endswith(".blob.core.windows.net")
    assert (url.container, url.prefix) == ("dossiers", "nightly/")
    assert config.out == Path(document["run"]["work"])
    volumes = {volume["name"]: volume for volume in template["spec"]["volumes"]}
    holding = [
        volumes[mount["name"]]
        for mount in container["volumeMounts"]
        if config.out.is_relative_to(mount["mountPath"])
    ]
    claim = {"claimName": _one("pvc.yaml")["metadata"]["name"]}
    assert [volume.get("persistentVolumeClaim") for volume in holding] == [claim]
    assert config.state.is_relative_to(config.out)
    # With [[identities]], cli._run builds the storage credential from --auth and the process's
    # environment: the webhook's AZURE_CLIENT_ID, the service account's, which is app-a's.
    assert config.auth is AuthKind.WORKLOAD_IDENTITY
    assert environ["AZURE_CLIENT_ID"] == client_ids[0]
    storage = storage_credential(url, config.auth, environ)
    assert type(storage).__name__ == "WorkloadIdentityCredential"
    close = getattr(storage, "close", None)
    if close is not None:
        await close()


def test_the_image_runs_as_the_manifests_user_with_writes_pointed_at_volumes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert f"USER {USER}:{USER}" in dockerfile
    assert 'ENTRYPOINT ["tini", "--", "sar-bulk"]' in dockerfile
    for variable in ("HOME=/tmp", "TMPDIR=/tmp", "SQLITE_TMPDIR=/tmp"):
        assert variable in dockerfile
    ports = {int(_flag(_container(t)["args"], "--metrics-port")) for _, _, t in _pod_specs()}
    assert ports == {int(m) for m in re.findall(r"^EXPOSE (\d+)$", dockerfile, re.MULTILINE)}


async def _wait_for_a_dossier(process: asyncio.subprocess.Process, out: Path) -> None:
    async with asyncio.timeout(GRACE):
        while not await asyncio.to_thread(lambda: out.exists() and bool(dossier_names(out))):
            assert process.returncode is None, "the run ended before its first dossier"
            await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_sigterm_ends_the_manifests_run_within_its_grace_period(tmp_path: Path) -> None:
    """The Indexed Job's own command line, local paths and the simulator swapped in."""
    job = _one("job-indexed.yaml")
    template = job["spec"]["template"]
    grace = template["spec"]["terminationGracePeriodSeconds"]
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "shards.toml"
    config.write_text(_one("configmap.yaml")["data"]["shards.toml"], encoding="utf-8")
    index = "1"
    args = [
        arg.replace("/config/shards.toml", str(config))
        .replace("/data/", f"{data}/")
        .replace("$(SHARD_INDEX)", index)
        for arg in _container(template)["args"]
    ]
    args[args.index("--metrics-port") + 1] = "0"  # a shared test machine: any free port
    args[args.index("--metrics-host") + 1] = "127.0.0.1"
    textfile = Path(_flag(args, "--metrics-textfile"))
    csv = write_csv(data / "sar-requests.csv", ["ContactId", *contact_ids(80, 41)])
    out = data / "shards"
    org = SimulatorConfig(
        seed=41, heavy_fraction=0.0, page_size=5, latency=0.01, latency_jitter=0.02
    )
    async with Simulator(org) as sim:
        local = ["--org", sim.base_url, "--contacts", str(csv), "--out", str(out)]
        local += ["--auth", "static-token", *FAST, "--window", "2", "--no-progress"]
        env = token_env(JOB_COMPLETION_INDEX=index)
        log = tmp_path / "run.log"
        process = await start_cli([*args, *local], env=env, log=log)
        await _wait_for_a_dossier(process, out)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"SIGTERM did not end the run within {grace} s") from None
        took = time.monotonic() - signalled
    assert process.returncode == ExitCode.SIGTERM, log.read_text()
    assert took < grace / 4, f"{took:.1f} s from SIGTERM to exit leaves too little margin"
    report = read_report(out, "run-report.shard-1-of-4.json")
    assert report["outcome"] == "interrupted (SIGTERM)"
    assert report["parameters"]["shard"] == "1/4"
    text = await asyncio.to_thread(textfile.read_text, "utf-8")
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples["sar_bulk_run_exit_code"] == ExitCode.SIGTERM
    assert "sar_bulk_last_success_timestamp_seconds" not in samples
    assert not [p for p in data.iterdir() if p.name.startswith("metrics") and p != textfile]

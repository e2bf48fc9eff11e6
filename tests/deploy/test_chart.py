"""The Helm chart (deploy/helm/quarry) and the image (deploy/Dockerfile).

The chart is rendered by Helm's own engine (helm-python-sdk binds Helm's Go SDK: templates,
values files and values.schema.json as `helm template` treats them, offline), once per shipped
values file, and every object it makes is checked against its API schema, strictly (a field
the API does not know is an error): Kubernetes' own schemas for built-in kinds
(kubernetes-validate) at the oldest Kubernetes the chart supports and the newest the package
ships, and KubeRay's CRDs for RayCluster and RayJob, made strict the same way, with jsonschema.
Then what scale-to-zero, the server and the Secret need is asserted on the rendered objects.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "quarry"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CRDS = Path(__file__).resolve().parent / "crds"
SHIPPED = ("values.yaml", "values-gpu.yaml", "values-rayjob.yaml")

# What a team writes in its own values file (docs/deploy.md): the passwords are distinctive so
# that a test can tell where they end up.
DB_PASSWORD = "db-Pa55-7f3a19"  # noqa: S105 (made up: the test is where it ends up)
S3_SECRET = "s3-Secret-91c2d4"  # noqa: S105 (made up, likewise)
SITE: dict[str, Any] = {
    "image": {"repository": "registry.example.com/research/quarry", "tag": "0.1.0"},
    "secret": {
        "databaseUrl": f"postgresql://quarry:{DB_PASSWORD}@postgres.db:5432/quarry",
        "store": "s3://quarry/store",
        "trackingUri": f"postgresql+psycopg://mlflow:{DB_PASSWORD}@postgres.db:5432/mlflow",
        "artifactUri": "s3://quarry/mlflow",
        "s3": {"endpointUrl": "http://minio.storage:9000", "accessKeyId": "quarry",
               "secretAccessKey": S3_SECRET},
    },
}  # fmt: skip
WORKFLOW = "name: w\nfeatures: {set: alpha158}\nmodel: {type: lightgbm}\n"
# Layers in the order `helm install -f A -f B` applies them (the last wins): a file name is a
# shipped values file, a dict what the team wrote, given last as docs/deploy.md says.
SCENARIOS: dict[str, list[str | dict[str, Any]]] = {
    "values.yaml": ["values.yaml", SITE],
    "values-gpu.yaml": ["values-gpu.yaml", SITE],
    "values-rayjob.yaml": ["values-rayjob.yaml", SITE],
    # a RayJob on the long-lived cluster, beside the server
    "rayjob-on-cluster": [SITE, {"rayJob": {"enabled": True, "useCluster": True,
                                            "workflow": WORKFLOW}}],
    # the least a team gives: the database
    "database-only": [{"secret": {"databaseUrl": f"postgresql://quarry:{DB_PASSWORD}@db/q"}}],
    # the team's own Secret: the chart makes none
    "existing-secret": [{"secret": {"existingSecret": "team-quarry"}}],
}  # fmt: skip
SECRET_KEYS = ("QUARRY_DB", "QUARRY_STORE", "QUARRY_TRACKING_URI", "QUARRY_ARTIFACT_URI",
               "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY")  # fmt: skip
# Pods listen on every interface of their own network namespace: what a Service reaches.
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def helm() -> Any:
    import helm_python

    return helm_python


@pytest.fixture(scope="module")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def values_of(helm: Any, layers: list[str | dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for layer in layers:
        if isinstance(layer, str):  # parsed by Helm's own YAML reader, as -f does
            layer = helm.values_from_yaml((CHART / layer).read_text())
        values = merged(values, layer)
    return values


def render(helm: Any, chart: Any, layers: list[str | dict[str, Any]],
           release: str = "quarry") -> list[dict[str, Any]]:  # fmt: skip
    """Every object the chart makes for these values, as `helm template` would print them."""
    manifests = chart.render(values_of(helm, layers), name=release, namespace="research")
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


@pytest.fixture(scope="module")
def rendered(helm: Any, chart: Any) -> dict[str, list[dict[str, Any]]]:
    return {name: render(helm, chart, layers) for name, layers in SCENARIOS.items()}


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def cluster_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The RayCluster specs the objects describe: the chart's RayCluster, a RayJob's own."""
    specs = [o["spec"] for o in objects if o["kind"] == "RayCluster"]
    specs += [o["spec"]["rayClusterSpec"] for o in objects
              if o["kind"] == "RayJob" and "rayClusterSpec" in o["spec"]]  # fmt: skip
    return specs


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod template the objects hold, named by where it is."""
    for o in objects:
        name = f"{o['kind']} {o['metadata']['name']}"
        if o["kind"] == "Deployment":
            yield name, o["spec"]["template"]["spec"]
        if o["kind"] == "RayJob":
            yield f"{name} submitter", o["spec"]["submitterPodTemplate"]["spec"]
    for k, spec in enumerate(cluster_specs(objects)):
        yield f"cluster {k} head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"cluster {k} {group['groupName']}", group["template"]["spec"]


# -- schemas ----------------------------------------------------------------------------------


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's openAPIV3Schema with unknown fields refused wherever it lists the fields, as the
    API server prunes them (or refuses them, with strict field validation)."""
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        out["items"] = strict(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [strict(s) for s in schema[key]]
    if "not" in schema:
        out["not"] = strict(schema["not"])
    return out


def _list_type(validator: Any, list_type: str, instance: Any, schema: dict[str, Any]
               ) -> Iterator[jsonschema.ValidationError]:  # fmt: skip
    """The API server refuses a list-map with two items of the same keys (two env variables of
    one name) and a list-set with a repeated item; JSON Schema has no such keyword."""
    if not validator.is_type(instance, "array"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", []) if list_type == "map" else None
    seen: set[str] = set()
    for item in instance:
        key = json.dumps([item.get(k) for k in keys] if keys is not None else item, sort_keys=True)
        if key in seen:
            yield jsonschema.ValidationError(f"duplicate item {key} in a list-{list_type}")
        seen.add(key)


KubeValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-list-type": _list_type}
)


def _crd_file(plural: str) -> Path | None:
    for name in (f"ray.io_{plural}.yaml.gz", f"ray.io_{plural}.yaml"):
        if (CRDS / name).exists():
            return CRDS / name
    return None


@pytest.fixture(scope="module")
def kuberay() -> dict[str, Any]:
    """KubeRay's strict RayCluster and RayJob validators, from the CRDs kept in tests/deploy/crds
    (never downloaded here)."""
    validators = {}
    for kind, plural in (("RayCluster", "rayclusters"), ("RayJob", "rayjobs")):
        path = _crd_file(plural)
        if path is None:
            pytest.skip(f"KubeRay's CRD {CRDS}/ray.io_{plural}.yaml(.gz) is missing: add it from "
                        "KubeRay's release (ray-operator/config/crd/bases) to check the chart's "
                        f"{kind} against it")  # fmt: skip
        text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        crd = yaml.load(text, Loader=yaml.CSafeLoader)  # libyaml's safe loader: 4x faster
        assert crd["spec"]["names"]["kind"] == kind
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = strict(v1["schema"]["openAPIV3Schema"])
        KubeValidator.check_schema(schema)
        validators[kind] = KubeValidator(schema)
    return validators


@functools.cache
def kubernetes_versions() -> list[str]:
    """The oldest Kubernetes the chart declares (Chart.yaml's kubeVersion) and the newest
    kubernetes-validate ships."""
    import kubernetes_validate

    oldest = re.search(r">=\s*(\d+\.\d+)", yaml.safe_load((CHART / "Chart.yaml").read_text())
                       ["kubeVersion"])  # fmt: skip
    assert oldest is not None
    return [oldest[1], kubernetes_validate.latest_version()]


def problems(obj: dict[str, Any], kuberay: dict[str, Any]) -> list[str]:
    """What the API server would refuse in obj: every schema error, with its path."""
    import kubernetes_validate

    where = f"{obj['kind']} {obj['metadata']['name']}"
    if obj["apiVersion"] == "ray.io/v1":
        return [f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                for e in kuberay[obj["kind"]].iter_errors(obj)]  # fmt: skip
    found = []
    for version in kubernetes_versions():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            found.append(f"{where} (Kubernetes {version}): {'.'.join(map(str, e.path))}: "
                         f"{e.message}")  # fmt: skip
    return found


# -- every object valid -----------------------------------------------------------------------

KINDS = {
    "values.yaml": ["Deployment", "RayCluster", "Secret", "Service"],
    "values-gpu.yaml": ["Deployment", "RayCluster", "Secret", "Service"],
    "values-rayjob.yaml": ["ConfigMap", "RayJob", "Secret"],
    "rayjob-on-cluster": ["ConfigMap", "Deployment", "RayCluster", "RayJob", "Secret", "Service"],
    "database-only": ["Deployment", "RayCluster", "Secret", "Service"],
    "existing-secret": ["Deployment", "RayCluster", "Service"],
}
WITH_SERVER = [scenario for scenario, kinds in KINDS.items() if "Deployment" in kinds]


def test_every_shipped_values_file_is_rendered_here() -> None:
    assert sorted(p.name for p in CHART.glob("values*.yaml")) == sorted(SHIPPED)
    assert set(SHIPPED) <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_object_is_valid_against_its_api_schema(
    scenario: str, rendered: dict[str, list[dict[str, Any]]], kuberay: dict[str, Any]
) -> None:
    objects = rendered[scenario]
    assert sorted(o["kind"] for o in objects) == KINDS[scenario]
    assert [p for o in objects for p in problems(o, kuberay)] == []


def test_the_validators_refuse_an_unknown_field(
    rendered: dict[str, list[dict[str, Any]]], kuberay: dict[str, Any]
) -> None:
    """The strictness the checks above rely on: a misspelt field deep in a pod template, and a
    repeated environment variable, are refused."""
    for scenario, kind in (("values.yaml", "Deployment"), ("values.yaml", "RayCluster"),
                           ("values-rayjob.yaml", "RayJob")):  # fmt: skip
        obj = json.loads(json.dumps(only(rendered[scenario], kind)))
        spec = obj["spec"].get("rayClusterSpec", obj["spec"])
        pod = spec["template"] if kind == "Deployment" else spec["headGroupSpec"]["template"]
        pod["spec"]["containers"][0]["resource"] = {"limits": {"cpu": "1"}}
        assert [p for p in problems(obj, kuberay) if "'resource' was unexpected" in p], kind
    cluster = json.loads(json.dumps(only(rendered["values.yaml"], "RayCluster")))
    container = cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]
    assert [p for p in problems(cluster, kuberay) if "duplicate item" in p]


def test_helm_lint_finds_nothing_to_warn_about(helm: Any) -> None:
    for scenario, layers in SCENARIOS.items():
        report = helm.lint(CHART, values_of(helm, layers), strict=True,
                           kube_version=f"v{kubernetes_versions()[0]}.0")  # fmt: skip
        assert report["errors"] == [], scenario
        # severity 1 is information ("icon is recommended"); 2 and 3 are warnings and errors
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], scenario


# -- scale to zero ----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_ray_clusters_scale_to_zero_and_the_head_takes_no_work(
    scenario: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    specs = cluster_specs(rendered[scenario])
    assert len(specs) == 1  # the chart's RayCluster or the RayJob's own, never both
    for spec in specs:
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
        head = spec["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0"
        assert head["rayStartParams"]["dashboard-host"] == EVERY_INTERFACE
        assert "resources" not in head  # Ray's own resources would contradict num-cpus
        groups = spec["workerGroupSpecs"]
        assert groups, "no worker group: nothing could run"
        for group in groups:
            assert (group["minReplicas"], group["replicas"]) == (0, 0), group["groupName"]
            assert group["maxReplicas"] >= 1, group["groupName"]
            pod = group["template"]["spec"]
            resources = pod["containers"][0]["resources"]
            assert resources["requests"] and resources["limits"], group["groupName"]
            assert {"cpu", "memory"} <= set(resources["limits"]), group["groupName"]


def test_the_head_cannot_be_given_cpus(helm: Any, chart: Any) -> None:
    """num-cpus "0" is the chart's: a team's rayStartParams add options, never work on the head."""
    objects = render(helm, chart, [SITE, {"ray": {"head": {"rayStartParams": {
        "num-cpus": 4, "object-store-memory": 10**9}}}}])  # fmt: skip
    params = only(objects, "RayCluster")["spec"]["headGroupSpec"]["rayStartParams"]
    assert params == {"num-cpus": "0", "dashboard-host": EVERY_INTERFACE,
                      "object-store-memory": "1000000000"}  # fmt: skip


def test_the_gpu_values_add_a_gpu_group_that_tolerates_gpu_nodes(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    def groups(scenario: str) -> dict[str, dict[str, Any]]:
        spec = only(rendered[scenario], "RayCluster")["spec"]
        return {g["groupName"]: g["template"]["spec"] for g in spec["workerGroupSpecs"]}

    assert list(groups("values.yaml")) == ["cpu"]
    gpu_groups = groups("values-gpu.yaml")
    assert sorted(gpu_groups) == ["cpu", "gpu"]
    gpu = gpu_groups["gpu"]
    assert int(gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists"
               and t["effect"] == "NoSchedule" for t in gpu["tolerations"])  # fmt: skip
    assert gpu.get("nodeSelector"), "a GPU group should ask for GPU nodes"
    cpu = gpu_groups["cpu"]
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]
    assert not cpu.get("tolerations")


# -- the server -------------------------------------------------------------------------------


def flags(command: list[str]) -> dict[str, list[str]]:
    """A command's options and their values (an option may repeat)."""
    found: dict[str, list[str]] = {}
    for k, word in enumerate(command):
        if word.startswith("--"):
            value = command[k + 1] if k + 1 < len(command) else ""
            found.setdefault(word, []).append("" if value.startswith("--") else value)
    return found


def server_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


@pytest.mark.parametrize("scenario", WITH_SERVER)
def test_the_server_probes_healthz_on_its_port(
    scenario: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    objects = rendered[scenario]
    container = server_container(objects)
    (port,) = flags(container["command"])["--port"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert port_number(container, get["port"]) == int(port), probe
    service = only(objects, "Service")
    (service_port,) = service["spec"]["ports"]
    assert port_number(container, service_port["targetPort"]) == int(port)
    pod = only(objects, "Deployment")["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert container["resources"]["requests"] and container["resources"]["limits"]


@pytest.mark.parametrize("scenario", WITH_SERVER)
def test_the_server_submits_to_the_ray_head(
    scenario: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    objects = rendered[scenario]
    command = server_container(objects)["command"]
    assert command[:3] == ["quarry", "server", "start"]
    given = flags(command)
    assert given["--host"] == [EVERY_INTERFACE]
    assert given["--backend"] == ["ray"]
    cluster = only(objects, "RayCluster")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    (dashboard,) = [p["containerPort"] for p in head["ports"] if p["name"] == "dashboard"]
    assert dashboard == 8265  # what KubeRay's head Service exposes as "dashboard"
    # KubeRay names a RayCluster's head Service <cluster name>-head-svc
    assert given["--ray-address"] == [f"http://{cluster['metadata']['name']}-head-svc:8265"]
    # the database URL (password included) is read from QUARRY_DB, never an argument
    assert "--db" not in given
    assert not any("QUARRY_DB" in arg for arg in server_container(objects)["command"])
    env = {e["name"]: e for e in server_container(objects)["env"]}
    assert "secretKeyRef" in env["QUARRY_DB"]["valueFrom"]
    # what the server hands on to attempts must be in its environment to be handed on
    assert set(given["--pass-env"]) <= set(env)


def test_the_server_uses_only_options_quarry_has(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    import typer

    from quarry.cli import app

    start = typer.main.get_command(app).commands["server"].commands["start"]
    known = {opt for param in start.params for opt in param.opts}
    for scenario in WITH_SERVER:
        assert set(flags(server_container(rendered[scenario])["command"])) <= known, scenario


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity as a number: "500m" is 0.5, "16Gi" 16 * 2**30."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip
    found = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    assert found is not None, text
    return float(found[1]) * units.get(found[2], 1)


@pytest.mark.parametrize(
    ("scenario", "cpus", "memory", "gpus"),
    [("values.yaml", 16, 64 << 30, 0), ("values-gpu.yaml", 32, 128 << 30, 2)],
)
def test_the_server_admits_what_the_scaled_up_cluster_holds(
    scenario: str, cpus: float, memory: int, gpus: int,
    rendered: dict[str, list[dict[str, Any]]],
) -> None:  # fmt: skip
    """Scaled to zero, the cluster has no live CPUs for the server to count, so the chart
    tells it what the worker groups hold at their maxReplicas: 4 pods of 4 CPUs and 16 GiB,
    and with values-gpu.yaml 2 pods of 8 CPUs, 32 GiB and a GPU."""
    objects = rendered[scenario]
    given = flags(server_container(objects)["command"])
    assert (float(given["--cpus"][0]), int(given["--memory"][0]), int(given["--gpus"][0])) == (
        cpus, memory, gpus)  # fmt: skip
    # the same, counted from the RayCluster the chart rendered
    total = [0.0, 0.0, 0.0]
    for group in only(objects, "RayCluster")["spec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        for k, key in enumerate(("cpu", "memory", "nvidia.com/gpu")):
            total[k] += group["maxReplicas"] * quantity(limits.get(key, 0))
    assert total == [cpus, memory, gpus]


def test_the_capacity_is_shared_among_server_replicas_or_given(helm: Any, chart: Any) -> None:
    def capacity(values: dict[str, Any]) -> list[str]:
        command = server_container(render(helm, chart, [SITE, values]))["command"]
        return [flags(command)[f][0] for f in ("--cpus", "--memory", "--gpus")]

    assert capacity({"server": {"replicas": 2}}) == ["8", str(32 << 30), "0"]
    assert capacity({"server": {"capacity": {"cpus": 6, "memory": "20Gi", "gpus": 1}}}) == [
        "6", "20Gi", "1"]  # fmt: skip
    assert capacity({"server": {"capacity": {"cpus": 2.5, "memory": 20 << 30}}}) == [
        "2.5", str(20 << 30), "0"]  # fmt: skip
    quarter = {"resources": {"limits": {"cpu": "1500m", "memory": "1536Mi"}}}
    assert capacity({"ray": {"workerGroups": {"cpu": quarter}}}) == ["6", str(6 << 30), "0"]
    # another cluster's: the server counts its live nodes itself
    command = server_container(render(helm, chart, [SITE, {"server": {
        "rayAddress": "http://elsewhere-head-svc:8265"}}]))["command"]  # fmt: skip
    assert {"--cpus", "--memory", "--gpus"}.isdisjoint(flags(command))
    assert flags(command)["--ray-address"] == ["http://elsewhere-head-svc:8265"]


def test_the_server_runs_as_a_non_root_user_with_a_read_only_root(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    pod = only(rendered["values.yaml"], "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    context = server_container(rendered["values.yaml"])["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    # what it writes has a volume: QUARRY_HOME (the image's), /tmp and the user's home
    mounts = {m["mountPath"] for m in server_container(rendered["values.yaml"])["volumeMounts"]}
    assert mounts == {"/var/lib/quarry", "/tmp", "/home/quarry"}  # noqa: S108 (a pod's own /tmp)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_pod_runs_as_non_root(
    scenario: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    for where, pod in pod_specs(rendered[scenario]):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where


# -- the Secret -------------------------------------------------------------------------------


def secret_refs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for where, pod in pod_specs(objects):
        for container in pod["containers"]:
            for env in container.get("env", []):
                yield f"{where} {container['name']}", env


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_secret_is_referenced_never_copied(
    scenario: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    objects = rendered[scenario]
    secrets = [o for o in objects if o["kind"] == "Secret"]
    name = "team-quarry" if scenario == "existing-secret" else only(objects, "Secret")[
        "metadata"]["name"]  # fmt: skip
    held = set(secrets[0]["stringData"]) if secrets else set(SECRET_KEYS)
    for where, env in secret_refs(objects):
        if env["name"] in SECRET_KEYS:
            assert "value" not in env, f"{where}: {env['name']} written into the pod spec"
            ref = env["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (name, env["name"]), where
            # a key the Secret lacks must be optional, or the pod would never start
            assert ref["key"] in held or ref.get("optional") is True, where
    # the passwords given are in the Secret and nowhere else
    given = [p for p in (DB_PASSWORD, S3_SECRET) if p in json.dumps(SCENARIOS[scenario])]
    for obj in objects:
        text = json.dumps(obj)
        where = f"{obj['kind']} {obj['metadata']['name']}"
        for password in (DB_PASSWORD, S3_SECRET):
            assert (password in text) == (obj["kind"] == "Secret" and password in given), where


def test_the_secret_holds_what_the_team_gave(rendered: dict[str, list[dict[str, Any]]]) -> None:
    data = only(rendered["values.yaml"], "Secret")["stringData"]
    s3 = SITE["secret"]["s3"]
    assert data == {
        "QUARRY_DB": SITE["secret"]["databaseUrl"],
        "QUARRY_STORE": SITE["secret"]["store"],
        "QUARRY_TRACKING_URI": SITE["secret"]["trackingUri"],
        "QUARRY_ARTIFACT_URI": SITE["secret"]["artifactUri"],
        "AWS_ENDPOINT_URL": s3["endpointUrl"],
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": s3["accessKeyId"],
        "AWS_SECRET_ACCESS_KEY": s3["secretAccessKey"],
    }


def test_only_the_server_reads_the_database_and_ray_pods_get_credentials_only_when_told(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    def names(objects: list[dict[str, Any]], where_starts: str) -> set[str]:
        return {env["name"] for where, env in secret_refs(objects)
                if where.startswith(where_starts)}  # fmt: skip

    for scenario, objects in rendered.items():
        assert "QUARRY_DB" not in names(objects, "cluster"), scenario
        assert "QUARRY_DB" not in names(objects, "RayJob"), scenario
    # the long-lived cluster: every job would read them, whatever its project
    assert names(rendered["values.yaml"], "cluster") == set()
    # a RayJob's own cluster runs one workflow, which reads the store
    assert names(rendered["values-rayjob.yaml"], "cluster") == set(SECRET_KEYS) - {"QUARRY_DB"}


# -- the RayJob -------------------------------------------------------------------------------


def test_the_rayjob_runs_the_workflow_on_a_cluster_of_its_own(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    from quarry.workflows import load_workflow

    objects = rendered["values-rayjob.yaml"]
    job = only(objects, "RayJob")
    words = job["spec"]["entrypoint"].split()
    assert words[:3] == ["quarry", "run", "/etc/quarry/workflow/workflow.yaml"]
    # the head has no CPUs, so the run needs one of a worker: the autoscaler starts one
    assert job["spec"]["entrypointNumCpus"] >= 1
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["ttlSecondsAfterFinished"] >= 0
    configmap = only(objects, "ConfigMap")
    for where, pod in pod_specs(objects):
        if where.endswith("submitter"):
            continue
        (volume,) = [v for v in pod["volumes"] if v["name"] == "workflow"]
        assert volume["configMap"]["name"] == configmap["metadata"]["name"], where
        (mount,) = pod["containers"][0]["volumeMounts"]
        assert (mount["name"], mount["mountPath"]) == ("workflow", "/etc/quarry/workflow"), where
    # the shipped workflow is one this Quarry accepts
    path = tmp_path / "workflow.yaml"
    path.write_text(configmap["data"]["workflow.yaml"])
    assert load_workflow(path).data.store == "s3://quarry/store"


def test_an_upgrade_replaces_the_long_lived_clusters_pods(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """A new image must reach every Ray node, or the server and its workers run two Quarrys;
    KubeRay refuses an upgrade strategy in a RayJob's own cluster."""
    cluster = only(rendered["values.yaml"], "RayCluster")
    assert cluster["spec"]["upgradeStrategy"] == {"type": "Recreate"}
    job = only(rendered["values-rayjob.yaml"], "RayJob")
    assert "upgradeStrategy" not in job["spec"]["rayClusterSpec"]


def test_a_rayjob_can_use_the_long_lived_cluster(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["rayjob-on-cluster"]
    job = only(objects, "RayJob")
    cluster = only(objects, "RayCluster")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert "rayClusterSpec" not in job["spec"]
    # KubeRay keeps a selected cluster; a TTL would be refused without shutdownAfterJobFinishes
    assert job["spec"]["shutdownAfterJobFinishes"] is False
    assert "ttlSecondsAfterFinished" not in job["spec"]
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["volumeMounts"][0]["mountPath"] == "/etc/quarry/workflow"
    # the server is still there, beside it
    assert only(objects, "Deployment")


# -- names and bad values ---------------------------------------------------------------------


def test_names_fit_kubernetes_and_kuberay_limits_for_the_longest_release_name(
    helm: Any, chart: Any
) -> None:
    release = "r" * 53  # Helm's longest release name
    layers: list[str | dict[str, Any]] = [SITE, {"rayJob": {"enabled": True, "useCluster": True,
                                                            "workflow": WORKFLOW}}]  # fmt: skip
    objects = render(helm, chart, layers, release=release)
    helm.validate_release_name(release)
    for obj in objects:
        name = obj["metadata"]["name"]
        limit = {"RayCluster": 53, "RayJob": 47, "Service": 63}.get(obj["kind"], 253)
        assert len(name) <= limit and DNS_1035.match(name), (obj["kind"], name)
    cluster = only(objects, "RayCluster")["metadata"]["name"]
    assert len(f"{cluster}-head-svc") <= 63


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, r"secret\.databaseUrl: give the job database as postgresql://"),
        ({"secret": {"databaseUrl": "mysql://ann:hunter2@db/quarry"}},
         r"secret\.databaseUrl: mysql://ann:\*\*\*@db/quarry is not a postgresql:// URL"),
        ({**SITE, "ray": {"workerGroups": {"cpu": {"minReplicas": 3, "maxReplicas": 2}}}},
         r"ray\.workerGroups\.cpu: minReplicas 3 is above maxReplicas 2"),
        ({**SITE, "rayJob": {"enabled": True}}, r"rayJob\.workflow: give the workflow file's"),
        ({**SITE, "ray": {"cluster": {"enabled": False}}}, r"server\.rayAddress: the chart makes"),
        ({**SITE, "server": {"replica": 2}}, r"at '/server': additional properties 'replica'"),
        ({**SITE, "ray": {"workerGroups": {"big": {"enabled": True}}}},
         r"at '/ray/workerGroups/big': missing properties 'minReplicas'"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_naming_the_value(
    helm: Any, chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError, match=message) as info:
        chart.render(values, name="quarry", namespace="research")
    assert "hunter2" not in str(info.value)


# -- the image --------------------------------------------------------------------------------


def dockerfile() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """deploy/Dockerfile's ARG defaults and its instructions, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            steps.append((word.upper(), rest.strip()))
    args = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
    return args, steps


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], text)


def test_the_image_has_quarry_with_ray_on_the_projects_python() -> None:
    args, steps = dockerfile()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    python = pyproject["tool"]["mypy"]["python_version"]
    assert python == "3.11" == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + python.replace(".", "")
    # every stage, the build and the one shipped, on that Python
    bases = [expand(rest.split()[0], args) for word, rest in steps if word == "FROM"]
    assert bases and all(b == f"python:{python}-slim" for b in bases), bases
    (install,) = [expand(rest, args) for word, rest in steps
                  if word == "RUN" and "pip install" in rest]  # fmt: skip
    extras = re.search(r"\"\.\[([\w,]+)\]\"", install)
    assert extras is not None and "ray" in extras[1].split(","), install
    # the Ray pinned is the one the chart declares, and one Quarry's ray extra accepts
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f'"ray[default]=={values["ray"]["version"]}"' in install
    (ray_extra,) = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["ray"]]
    assert ray_extra.name == "ray" and ray_extra.specifier.contains(values["ray"]["version"])
    # the user the chart's pods run as
    (user,) = [rest for word, rest in steps if word == "USER"]
    assert user.split(":")[0] == str(values["podSecurityContext"]["runAsUser"]) != "0"
    # what it copies from the repository is there (the build context is the root)
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source


# -- the guide --------------------------------------------------------------------------------

GUIDE = ROOT / "docs" / "deploy.md"


def guide_blocks(lang: str) -> dict[str, str]:
    """docs/deploy.md's code blocks in ``lang``, by their first line."""
    found = re.findall(rf"^```{lang}\n(.*?)^```$", GUIDE.read_text(), re.M | re.S)
    return {block.splitlines()[0]: block for block in found}


def test_the_guide_installs_what_the_chart_makes(
    helm: Any, chart: Any, kuberay: dict[str, Any]
) -> None:
    """docs/deploy.md's values, Secret, job and commands, against what the chart renders."""
    from quarry.jobs import manifest_from_yaml

    text = GUIDE.read_text()
    mine = helm.values_from_yaml(guide_blocks("yaml")["# my-values.yaml"])
    objects = render(helm, chart, [mine])
    assert [p for o in objects for p in problems(o, kuberay)] == []
    # the Secret the guide makes holds every key the chart reads, under the name it gives
    created = re.search(r"create secret generic (\S+)((?:\s+\\\n\s+--from-literal=\S+)+)", text)
    assert created is not None
    assert created[1] == mine["secret"]["existingSecret"]
    assert sorted(re.findall(r"--from-literal=(\w+)=", created[2])) == sorted(SECRET_KEYS)
    # the names its commands use are those of the objects (release quarry)
    server = only(objects, "Deployment")["metadata"]["name"]
    cluster = only(objects, "RayCluster")["metadata"]["name"]
    commands = "\n".join(guide_blocks("sh").values())
    named = re.findall(
        r"\b(svc/|deploy/|job/|raycluster |rayjob )([a-z][-a-z0-9]+)\b(?!/)", commands
    )  # a path such as deploy/helm/quarry is not a name
    named = [(kind.strip(" /"), name) for kind, name in named]
    assert {(kind, name) for kind, name in named if name != "kuberay-operator"} == {
        ("svc", server), ("deploy", server), ("raycluster", cluster),
        ("rayjob", "nightly-quarry-run"), ("job", "nightly-quarry-run")}  # fmt: skip
    for used in ("-l app.kubernetes.io/component=ray-worker",
                 "-l app.kubernetes.io/component=ray-head -c autoscaler"):  # fmt: skip
        assert used in text, used
    spec = only(objects, "RayCluster")["spec"]
    assert spec["headGroupSpec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] \
        == "ray-head"  # fmt: skip
    (cpu,) = spec["workerGroupSpecs"]
    assert cpu["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "ray-worker"
    given = flags(server_container(objects)["command"])
    capacity = " ".join(f"{f} {given[f][0]}" for f in ("--cpus", "--memory", "--gpus"))
    assert f"`{capacity}`" in text
    # the RayJob's names (release nightly)
    job = only(render(helm, chart, ["values-rayjob.yaml", mine], release="nightly"), "RayJob")
    assert job["metadata"]["name"] == "nightly-quarry-run"
    # the first job fits one worker pod, and runs from the image's working directory
    manifest = manifest_from_yaml(guide_blocks("yaml")["# job.yaml"], "docs/deploy.md")
    limits = cpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert manifest.resources.cpus <= quantity(limits["cpu"])
    assert manifest.resources.memory <= quantity(limits["memory"])
    _, steps = dockerfile()
    assert manifest.run.workdir == [rest for word, rest in steps if word == "WORKDIR"][-1]
    assert manifest.run.command is not None
    workflow = re.search(r"quarry run (\S+)", " ".join(manifest.run.command))
    assert workflow is not None and (ROOT / workflow[1]).exists()
    # the KubeRay the guide installs is the one the chart is checked against
    annotations = yaml.safe_load((CHART / "Chart.yaml").read_text())["annotations"]
    assert f"--version {annotations['quarry/kuberay-version']}" in text
    readme = CRDS / "README.md"  # where the CRDs kept here say which release they are
    assert not readme.exists() or f"v{annotations['quarry/kuberay-version']}" in readme.read_text()

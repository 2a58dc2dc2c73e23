"""A Ray cluster of several nodes on this machine, for the `cluster` tests: a head and worker
nodes as separate raylets (`ray start --head`, `ray start --address`), and an S3 API (moto's
server) beside them.

As root with iproute2, every node is a host of its own: a network namespace with its own
address on a bridge (10.7x.N.0/24), so nodes share no loopback; otherwise (`mode` says which
ran) separate raylets on loopback with their own ports. Either way each node has its own
temp folder, HOME and caches, and nothing tells a worker where the driver's files are: what
it needs comes from the store or is built on the node. Worker nodes may declare GPUs they
do not have; their trials run on the CPU (SENTISWEEP_DECLARED_GPUS_ONLY) while Ray schedules
them as GPU trials.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent  # ray, moto_server: the test environment's own


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports nothing listens on now (the OS picks them). All sockets stay
    bound until the last is chosen: one at a time, the OS hands a just-closed port out again
    (22 of 20,000 draws of 7 here). A Ray head given one port twice put its runtime-env agent
    behind the Prometheus exporter, and every job failed with HTTP 405."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]


def netns_possible() -> bool:
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    probe = f"ssprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if made:
        subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return made


@dataclass
class Node:
    name: str
    ip: str
    folder: Path
    netns: str | None
    gpus: float = 0
    env: dict[str, str] = field(default_factory=dict)

    def command(self, argv: list[str]) -> list[str]:
        """argv as run on this node: inside its namespace, with its environment."""
        with_env = ["env", *[f"{k}={v}" for k, v in self.env.items()], *argv]
        return ["ip", "netns", "exec", self.netns, *with_env] if self.netns else with_env


class SimulatedCluster:
    started = 0
    def __init__(self, root: Path, env: dict[str, str] | None = None):
        # SENTISWEEP_CLUSTER_MODE=loopback runs the fallback where namespaces could be made
        self.mode = os.environ.get("SENTISWEEP_CLUSTER_MODE") or ("netns" if netns_possible() else "loopback")
        SimulatedCluster.started += 1  # several clusters at once (a module's fixtures) must not collide
        n = SimulatedCluster.started % 10
        self.tag = f"ss{os.getpid() % 10000}{n}"  # interface and namespace names: at most 15 characters
        self.subnet = f"10.{70 + n}.{os.getpid() % 250}"
        self.root = root
        self.nodes: dict[str, Node] = {}
        self.env = {
            "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
            "RAY_USAGE_STATS_ENABLED": "0", "SENTISWEEP_DECLARED_GPUS_ONLY": "1",
            # token authentication, as KubeRay's clusters run (the token in every node's environment)
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
            # a lost node is noticed in about 3 s, not Ray's default 15 (5 missed checks, 3 s apart)
            "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
            # tests checkpoint every second; Tune warns when its state is saved that often
            "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
            # the one setting a node keeps from this process: a run that sets Ray's worker niceness
            # (tests in xdist workers, tests/conftest.py) sets it on every node
            **{k: os.environ[k] for k in ("RAY_worker_niceness",) if k in os.environ},
            **(env or {})}
        self.moto: subprocess.Popen | None = None
        if self.mode == "netns":
            self._ip("link", "add", f"{self.tag}br", "type", "bridge")
            self._ip("addr", "add", f"{self.subnet}.1/24", "dev", f"{self.tag}br")
            self._ip("link", "set", f"{self.tag}br", "up")
        self.host_ip = f"{self.subnet}.1" if self.mode == "netns" else "127.0.0.1"  # moto, the test itself
        self.gcs_port = 6379 if self.mode == "netns" else free_ports(1)[0]

    # -- the S3 API ----------------------------------------------------------------------------
    def start_s3(self, bucket: str) -> dict[str, str]:
        """moto's S3 server on the host, reachable from every node; returns the standard AWS
        variables pyarrow and Ray Tune read, which every node (started after) gets too."""
        [port] = free_ports(1, self.host_ip)
        log = open(self.root / "moto.log", "w")
        self.moto = subprocess.Popen([str(BIN / "moto_server"), "-H", self.host_ip, "-p", str(port)],
                                     stdout=log, stderr=subprocess.STDOUT)
        aws = {"AWS_ENDPOINT_URL": f"http://{self.host_ip}:{port}", "AWS_ACCESS_KEY_ID": "sentisweep-test",
               "AWS_SECRET_ACCESS_KEY": "sentisweep-test", "AWS_REGION": "us-east-1",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection((self.host_ip, port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"moto did not start: {(self.root / 'moto.log').read_text()[-2000:]}") from None
                time.sleep(0.3)
        import boto3

        boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1",
                     aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)
        self.env.update(aws)
        return aws

    # -- nodes ---------------------------------------------------------------------------------
    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def _new_node(self, name: str, gpus: float) -> Node:
        number = len(self.nodes) + 2  # .1 is the host
        folder = Path(f"/tmp/{self.tag}{name}")  # short: Ray's socket paths must stay under 108 characters
        shutil.rmtree(folder, ignore_errors=True)
        netns = None
        if self.mode == "netns":
            netns = f"{self.tag}{name}"
            self._ip("netns", "add", netns)
            self._ip("link", "add", f"{netns}v", "type", "veth", "peer", "name", "eth0", "netns", netns)
            self._ip("link", "set", f"{netns}v", "master", f"{self.tag}br", "up")
            self._ip("-n", netns, "addr", "add", f"{self.subnet}.{number}/24", "dev", "eth0")
            self._ip("-n", netns, "link", "set", "eth0", "up")
            self._ip("-n", netns, "link", "set", "lo", "up")
        ip = f"{self.subnet}.{number}" if netns else "127.0.0.1"
        env = {**self.env, "HOME": str(folder / "home"), "SENTISWEEP_CACHE_DIR": str(folder / "cache"),
               "HF_HOME": str(folder / "hf"), "TMPDIR": str(folder / "tmp"),
               "SENTISWEEP_TEST_NODE": f"{self.tag}{name}"}
        for sub in ("home", "cache", "hf", "tmp"):
            (folder / sub).mkdir(parents=True)
        node = Node(name, ip, folder, netns, gpus, env)
        self.nodes[name] = node
        return node

    def _ports(self) -> list[str]:
        if self.mode == "netns":
            return []
        # several raylets on one loopback: every fixed port of a node made free
        flags = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
                 "--runtime-env-agent-port"]
        return [x for flag, port in zip(flags, free_ports(len(flags)), strict=True) for x in (flag, str(port))]

    def start_head(self) -> Node:
        head = self._new_node("h", 0)
        self._ray_start(head, ["--head", "--port", str(self.gcs_port), "--num-cpus", "0", "--num-gpus", "0",
                               "--include-dashboard", "false"])
        return head

    def add_worker(self, name: str, cpus: int = 1, gpus: float = 1) -> Node:
        node = self._new_node(name, gpus)
        self._ray_start(node, ["--address", f"{self.head.ip}:{self.gcs_port}", "--num-cpus", str(cpus),
                               "--num-gpus", str(gpus)])
        return node

    def _ray_start(self, node: Node, args: list[str]) -> None:
        argv = [str(BIN / "ray"), "start", "--node-ip-address", node.ip, "--temp-dir", str(node.folder / "ray"),
                "--disable-usage-stats", *self._ports(), *args]
        done = subprocess.run(node.command(argv), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"ray start on node {node.name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    @property
    def head(self) -> Node:
        return self.nodes["h"]

    @property
    def address(self) -> str:
        return f"{self.head.ip}:{self.gcs_port}"

    def run_on_head(self, argv: list[str], timeout: float = 900,
                    cwd: Path | None = None) -> subprocess.CompletedProcess:
        """A driver on the head node (as a RayJob's entrypoint runs), joining the cluster."""
        command = self.head.command(["env", f"RAY_ADDRESS={self.address}", *argv])
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)

    def popen_on_head(self, argv: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
        """The same, in the background, in a process group of its own (to kill the driver alone)."""
        command = self.head.command(["env", f"RAY_ADDRESS={self.address}", *argv])
        return subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=cwd)

    def kill_node(self, name: str) -> int:
        """SIGKILL every process of a node (its raylet, object store and workers): a preempted
        machine. Returns how many processes were killed."""
        node = self.nodes[name]
        pids = self._pids(node)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def _pids(self, node: Node) -> list[int]:
        if node.netns:
            listed = subprocess.run(["ip", "netns", "pids", node.netns], capture_output=True, text=True).stdout
            return [int(p) for p in listed.split()]
        import psutil

        pids = []
        for process in psutil.process_iter():
            try:
                if process.environ().get("SENTISWEEP_TEST_NODE") == node.env["SENTISWEEP_TEST_NODE"]:
                    pids.append(process.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return pids

    def stop(self) -> None:
        for name in reversed(list(self.nodes)):
            self.kill_node(name)
        if self.moto:
            self.moto.kill()
            self.moto.wait()
        time.sleep(0.5)
        for node in self.nodes.values():
            if node.netns:
                subprocess.run(["ip", "netns", "delete", node.netns], capture_output=True)
                subprocess.run(["ip", "link", "delete", f"{node.netns}v"], capture_output=True)
            shutil.rmtree(node.folder, ignore_errors=True)
        if self.mode == "netns":
            subprocess.run(["ip", "link", "delete", f"{self.tag}br"], capture_output=True)

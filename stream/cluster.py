"""Beyond one machine, on Ray (``pip install 'veil[cluster]'``): a site's cameras placed on
the nodes of a cluster, and a folder's files spread over it.

Cameras go in groups, one Ray actor per group (a ``LocalSite`` of its own, so the group's
frames still share detector calls), asking for the CPUs and GPUs its cameras need. Ray
restarts an actor whose process or node dies, on any node with room; its cameras start
again there, each recording in a new segment. Meanwhile nothing of theirs is written,
and the head's status shows them restarting. The head serves the one status page and
/metrics for the whole cluster.

Recordings and folder outputs are written on the node that makes them, at the paths the
site or command gives: point those at storage every node shares.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from veil.errors import InputError, MissingDependency
from veil.stream.cameras import LocalSite, Site, serve_until_stopped
from veil.stream.cameras.site import CameraSpec
from veil.stream.jobs.folder import finish_folder, folder_media, run_file, said
from veil.stream.options import Options
from veil.stream.pipeline import file_detector

STATUS_TIMEOUT_S = 2.0  # an actor slower than this to answer is shown as not answering
STOP_TIMEOUT_S = 60.0


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingDependency("--ray needs Ray: pip install 'veil[cluster]'") from None
    return ray


def connect(address: str):
    """Join the cluster at ``address`` (host:port of its head) as a driver."""
    ray = _ray()
    try:
        ray.init(address=address, log_to_driver=True, logging_level="warning", configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise InputError(f"cannot join the Ray cluster at {address}: {error}") from None
    return ray


class CameraGroup:
    """What runs inside one actor: some of the site's cameras, in one process."""

    def __init__(self, cameras: list[CameraSpec], batch_wait_s: float):
        import ray

        self.node = f"{ray.util.get_node_ip_address()} (node {ray.get_runtime_context().get_node_id()[:8]})"
        self.site = LocalSite(cameras, batch_wait_s=batch_wait_s).start()

    def statuses(self) -> list[dict]:
        return [{**status, "node": self.node} for status in self.site.statuses()]

    def thumbnail(self, name: str) -> bytes | None:
        return self.site.thumbnail(name)

    def stop(self) -> None:
        self.site.stop()


class RaySite:
    """A site's cameras on a Ray cluster, seen from the head: start, status, stop."""

    def __init__(self, site: Site, ray, *, log: Callable[[str], None] = print):
        self.ray, self.log = ray, log
        size = site.cluster.cameras_per_actor
        groups = [site.cameras[i:i + size] for i in range(0, len(site.cameras), size)]
        actor = ray.remote(max_restarts=-1, max_task_retries=0)(CameraGroup)
        self.groups = []
        for number, cameras in enumerate(groups):
            handle = actor.options(
                name=f"veil-cameras-{number}", num_cpus=site.cluster.cpus_per_camera * len(cameras),
                num_gpus=site.cluster.gpus_per_camera * len(cameras),
            ).remote(cameras, site.batch_wait_s)  # fmt: skip
            self.groups.append((cameras, handle))
        self._last: dict[str, dict] = {}

    def statuses(self) -> list[dict]:
        """Every camera's status; those whose actor does not answer (dead, restarting, not yet
        placed) keep their last figures, shown as restarting."""
        asked = [(cameras, handle.statuses.remote()) for cameras, handle in self.groups]
        found = []
        for cameras, reply in asked:
            try:
                statuses = self.ray.get(reply, timeout=STATUS_TIMEOUT_S)
            except Exception as error:  # noqa: BLE001 - a dead actor, a lost node, a timeout: all shown, none fatal
                statuses = [self._not_answering(camera, error) for camera in cameras]
            for status in statuses:
                if status["state"] != "restarting":
                    self._last[status["name"]] = status
            found += statuses
        return found

    def _not_answering(self, camera: CameraSpec, error: BaseException) -> dict:
        last = self._last.get(camera.name, {})
        return {
            "name": camera.name, "source": last.get("source", camera.source), "state": "restarting", "connected": False,
            "fps_in": 0.0, "fps_out": 0.0, "latency_p50_ms": None, "latency_p99_ms": None,
            "latency_count": last.get("latency_count", 0), "latency_sum_s": last.get("latency_sum_s", 0.0),
            **{key: last.get(key, 0) for key in ("frames_in", "frames_out", "dropped", "covered", "reconnects", "faces")},
            "last_error": f"its actor does not answer ({type(error).__name__}); Ray restarts it",
            "recording": None, "node": last.get("node"),
        }  # fmt: skip

    def thumbnail(self, name: str) -> bytes | None:
        for cameras, handle in self.groups:
            if any(camera.name == name for camera in cameras):
                try:
                    return self.ray.get(handle.thumbnail.remote(name), timeout=STATUS_TIMEOUT_S)
                except Exception:  # noqa: BLE001 - no picture while the actor is away
                    return None
        return None

    def stop(self) -> None:
        """Every group finishes its outputs, then its actor goes."""
        replies = [handle.stop.remote() for _, handle in self.groups]
        try:
            self.ray.get(replies, timeout=STOP_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001 - still kill what is left
            self.log(f"veil: not every camera group stopped cleanly: {error}")
        for _, handle in self.groups:
            self.ray.kill(handle, no_restart=True)


def run_site_on_ray(site: Site, address: str, *, log: Callable[[str], None] = print) -> None:
    """``veil cameras SITE --ray ADDRESS``: until Ctrl-C."""
    ray = connect(address)
    try:
        cameras = RaySite(site, ray, log=log)
        intro = f"veil: {len(site.cameras)} cameras in {len(cameras.groups)} groups on the Ray cluster at {address}"
        serve_until_stopped(site, cameras, intro, log=log)
    finally:
        ray.shutdown()


def _anonymise_file(path: str, target: str, options: Options) -> None:
    """One file, on whichever node Ray gives it (each task builds its own detector)."""
    run_file(Path(path), Path(target), options, file_detector(options), log=lambda line: None)


def run_folder_on_ray(input_dir, output_dir, options: Options, address: str, *, log: Callable[[str], None] = print) -> None:
    """``veil run FOLDER -o OUT --ray ADDRESS``: one task per file, one progress bar, a summary;
    a file that fails is reported and the rest finish."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise InputError(f"--ray spreads a folder's files; {input_dir} is not a folder")
    if options.audit:
        raise InputError("--audit writes one log in one place; run the folder without --ray to audit it")
    options.people()  # a bad reference fails here, not on every worker (each loads them again)
    media, skipped = folder_media(input_dir, output_dir)
    ray = connect(address)
    task = ray.remote(num_cpus=1, max_retries=0)(_anonymise_file)
    pending = {task.remote(str(path), str(output_dir / path.relative_to(input_dir)), options): path for path in media}
    failures: list[tuple[str, BaseException]] = []
    try:
        from tqdm import tqdm

        with tqdm(total=len(media), unit="file", disable=not options.progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                path = pending.pop(done[0])
                label = path.relative_to(input_dir).as_posix()
                try:
                    ray.get(done[0])
                except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
                    error = getattr(error, "cause", None) or error  # Ray wraps what the task raised
                    failures.append((label, error))
                    bar.write(f"veil: {label}: failed: {said(error)}")
                bar.update(1)
    finally:
        for reference in pending:
            ray.cancel(reference, force=True)
        ray.shutdown()
    finish_folder(len(media), sorted(failures, key=lambda item: item[0]), skipped, log)

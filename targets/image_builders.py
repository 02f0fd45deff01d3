"""Choosing the builder that turns an `ImagePlan` (targets/images.py) into an image.

Apart from the plan so that the builders can import the plan's types while this module imports
the builders: `docker` (targets/docker_builder.py, through a Docker engine) or `oci`
(targets/oci_builder.py, daemonless). Each is imported only when chosen: the Docker SDK is an
optional dependency.
"""

from __future__ import annotations

from bento_compile.core.errors import BentoCompileError
from bento_compile.targets.images import ImageBuilder

BUILDERS = ("auto", "docker", "oci")


def engine_reachable() -> bool:
    """True when a Docker engine answers (DOCKER_HOST or the default socket)."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


def choose_builder(name: str) -> ImageBuilder:
    """`docker`, `oci`, or `auto` (Docker when an engine answers, else daemonless)."""
    if name not in BUILDERS:
        raise BentoCompileError(f"Unknown builder '{name}'.", "Use --builder auto, docker or oci.")
    if name == "auto":
        name = "docker" if engine_reachable() else "oci"
    if name == "docker":
        from bento_compile.targets.docker_builder import DockerBuilder

        return DockerBuilder()
    from bento_compile.targets.oci_builder import OciBuilder

    return OciBuilder()

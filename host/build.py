"""`host build`: run each component's build command, as `spin build` does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence

from host.errors import BuildError, ManifestError
from host.manifest import Manifest


def build_env() -> dict[str, str]:
    """The caller's environment, with this interpreter's bin dir first on PATH.

    Toolchains installed beside the host (componentize-py, wasm-tools) are then
    found even when the virtualenv is not activated.
    """
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def build_app(
    manifest: Manifest,
    component_ids: Sequence[str] = (),
    say: Callable[[str], None] = print,
) -> None:
    """Run the build commands in manifest order; stop at the first failure."""
    unknown = [cid for cid in component_ids if cid not in manifest.components]
    if unknown:
        raise ManifestError(
            f"{manifest.path}: no component named \"{unknown[0]}\" "
            f"(components: {', '.join(manifest.components)})"
        )
    env = build_env()
    for component in manifest.components.values():
        if component_ids and component.id not in component_ids:
            continue
        if component.build is None:
            say(f"{component.id}: no build command; skipping")
            continue
        workdir = manifest.dir / (component.build.workdir or ".")
        if not workdir.is_dir():
            raise BuildError(
                f"{manifest.path}: [component.{component.id}.build] workdir: "
                f"{workdir} is not a directory"
            )
        for command in component.build.commands:
            say(f"Building component {component.id} with `{command}`")
            sys.stdout.flush()
            result = subprocess.run(command, shell=True, cwd=workdir, env=env, check=False)
            if result.returncode != 0:
                raise BuildError(
                    f"Build command for component {component.id} failed with status "
                    f"{result.returncode}: `{command}` (in {workdir})",
                    exit_code=result.returncode if result.returncode > 0 else 1,
                )
    say("Finished building all components" if not component_ids
        else f"Finished building {', '.join(component_ids)}")

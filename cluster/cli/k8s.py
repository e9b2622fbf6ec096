"""``lstm-tune k8s render``: KubeRay manifests for one experiment, checked before they reach a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cluster.cli.common import err, fail, user_errors
from cluster.cli.run import parse_run_options

k8s_app = typer.Typer(help="Kubernetes (KubeRay) manifests.", no_args_is_help=True)


@k8s_app.command("render")
def render_cmd(
    overlay: Annotated[str, typer.Option(help="base | cpu-dev | gpu")] = "base",
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="name=value; repeatable. storage (required, s3://), image, gpu-image, name, max-workers, role-arn, "
            "namespace, or any `lstm-tune run` option (space=forecast, scheduler=pbt, gpus-per-trial=0.5, ...).",
        ),
    ] = None,
    out_dir: Annotated[
        str | None, typer.Option(help="Write manifests.yaml + kustomization.yaml here (for kubectl apply -k).")
    ] = None,
    directory: Annotated[
        str | None, typer.Option("--dir", help="The deploy/k8s tree (default: this checkout's).")
    ] = None,
) -> None:
    """Print the manifests (RayJob, RayCluster, TensorBoard, ServiceAccount) for one experiment, or write them to a
    folder; settings are checked against the operator's rules and `lstm-tune run` before anything is printed."""
    from cluster.remote.k8s import render, to_yaml, write_kustomization

    try:
        objects = render(overlay, list(set_ or []), Path(directory) if directory else None, parse_run=parse_run_options)
    except user_errors() as exc:  # ManifestError is a ValueError
        fail(str(exc))
        return
    if out_dir:
        write_kustomization(objects, Path(out_dir))
        err.print(f"{len(objects)} objects -> {out_dir}/manifests.yaml; apply with: kubectl apply -k {out_dir}")
    else:
        typer.echo(to_yaml(objects), nl=False)


__all__ = ["k8s_app"]

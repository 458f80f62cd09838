"""The Kubernetes API client for the pipeline's own pods, and API errors as one line.

Inside a pod the ServiceAccount token is used; elsewhere the kubeconfig ($KUBECONFIG or
~/.kube/config), so the same code runs in a KFP step and on a laptop.
"""

from __future__ import annotations

import json
import os

from trainpipe.errors import TrainpipeError


class KubeError(TrainpipeError):
    """The Kubernetes API refused a request or could not be reached."""


def api_client(configuration=None):
    """An ApiClient for ``configuration``, else the in-cluster config, else the kubeconfig."""
    from kubernetes import client, config

    if configuration is not None:
        return client.ApiClient(configuration)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            # Read $KUBECONFIG now: the client library captured it when it was imported.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        except (config.ConfigException, OSError) as exc:
            raise KubeError(
                f"no Kubernetes credentials: not in a pod and no usable kubeconfig ({exc}); "
                "run inside the cluster or set KUBECONFIG"
            ) from None
    return client.ApiClient()


def describe(exc: Exception) -> str:
    """``409 AlreadyExists: trainjobs "x" already exists`` from an ApiException's Status body."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    try:
        parsed = json.loads(body) if body else {}
        reason, message = parsed.get("reason", ""), parsed.get("message", "")
    except (ValueError, TypeError, AttributeError):
        reason, message = getattr(exc, "reason", ""), ""
    if status is None:
        return str(exc)
    return f"{status} {reason}: {message}".strip().rstrip(":")

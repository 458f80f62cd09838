"""The loopback S3 server the suite shares comes back on the same port if it dies."""

from __future__ import annotations

import boto3
import pytest


def test_a_dead_server_is_restarted_on_its_port_with_a_warning(s3_server):
    endpoint = s3_server.endpoint
    s3_server.process.kill()
    s3_server.process.wait(timeout=10)
    with pytest.warns(UserWarning, match="moto S3 server had exited"):
        s3_server.ensure_running()
    assert s3_server.endpoint == endpoint
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="after-restart")
    client.put_object(Bucket="after-restart", Key="k", Body=b"v")
    assert client.get_object(Bucket="after-restart", Key="k")["Body"].read() == b"v"

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.cluster import KUBECTL, PrivateCluster


@pytest.fixture(scope="module")
def private_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    if not KUBECTL.exists():
        pytest.skip(f"{KUBECTL} is missing (run `make tools`)")
    cluster = PrivateCluster(Path(tmp_path_factory.mktemp("cluster"))).start()
    try:
        yield cluster
    finally:
        cluster.stop()

"""How `make test` runs: the groups that keep a session's feature cache or trained model on one worker."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("grouping_check")
def test_xdist_groups_reach_the_scheduler(request):
    """`make test` (--dist loadgroup) sends each xdist_group to one worker: the Flickr tests share one
    feature cache, trained_vit's tests one training. pytest-xdist 3.8.0 marks a grouped test by its node
    id, which pytest 9.2.0 no longer lets it change, so the groups were silently spread over both workers
    (pytest-dev/pytest-xdist#1386): requirements.txt pins pytest 9.1.1."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not a pytest-xdist worker under --dist loadgroup (`make test` is)")
    assert request.node.nodeid.endswith("@grouping_check")

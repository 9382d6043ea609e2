"""The committed pictures' sources are what the generator draws from the current compose file.

Only the Graphviz text is compared, so this needs no Graphviz: change docker-compose.yaml
without `make pictures` and this fails, naming the stale file.
"""

from __future__ import annotations

import pytest

from scripts.draw_pictures import PICTURES, load_compose, network_order, sources


@pytest.mark.parametrize("name", ["network.dot", "architecture.dot"])
def test_committed_source_matches_the_generator(name: str) -> None:
    committed = (PICTURES / name).read_text(encoding="utf-8")
    assert committed == sources()[name], f"pictures/{name} is stale: run `make pictures` and commit the result"


def test_the_network_picture_shows_every_service_network_and_subnet() -> None:
    compose = load_compose()
    network = sources()["network.dot"]
    for service in compose["services"]:
        assert f'  "{service}" [' in network
    for name, settings in compose["networks"].items():
        assert f'  "{name}" [' in network
        for pool in ((settings or {}).get("ipam") or {}).get("config", []):
            assert f">{pool['subnet']}<" in network
    assert "published 127.0.0.1:8080 → 8080" in network


def test_networks_are_ordered_so_bridging_services_span_the_fewest() -> None:
    # Services bridge a-b and b-c: b goes in the middle whatever the file's order, and of
    # the two mirror images the one closer to the file's order wins.
    assert network_order(["a", "c", "b"], [["a", "b"], ["b", "c"]]) == ["a", "b", "c"]
    assert network_order(["c", "a", "b"], [["a", "b"], ["b", "c"]]) == ["c", "b", "a"]
    assert network_order(["x", "y"], [["x"], ["y"]]) == ["x", "y"]

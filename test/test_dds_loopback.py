"""Every ROS process the tests start inherits a DDS configuration that cannot leave this machine."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import urlparse

NAMESPACE = {"dds": "https://cdds.io/config"}


def test_tests_force_localhost_discovery_and_the_loopback_config() -> None:
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    config = Path(urlparse(os.environ["CYCLONEDDS_URI"]).path)
    assert config == Path(__file__).parent / "cyclonedds_loopback.xml"


def test_cyclonedds_config_binds_to_lo_with_multicast_off() -> None:
    root = ElementTree.parse(urlparse(os.environ["CYCLONEDDS_URI"]).path).getroot()
    domain = root.find("dds:Domain", NAMESPACE)
    general = domain.find("dds:General", NAMESPACE)
    interfaces = general.findall("dds:Interfaces/dds:NetworkInterface", NAMESPACE)
    assert [(i.get("name"), i.get("multicast")) for i in interfaces] == [("lo", "false")]
    assert general.findtext("dds:AllowMulticast", namespaces=NAMESPACE) == "false"
    peers = domain.findall("dds:Discovery/dds:Peers/dds:Peer", NAMESPACE)
    assert [p.get("address") for p in peers] == ["127.0.0.1"]

"""Every ROS process the tests start inherits a DDS configuration that cannot leave this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import DDS_UNSET

NAMESPACE = {"dds": "https://cdds.io/config"}
FASTDDS = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
TEST_DIR = Path(__file__).parent
FOUR_MIB = str(4 * 1024 * 1024)


def test_tests_force_localhost_discovery_a_domain_and_the_loopback_configs() -> None:
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 1 <= int(os.environ["ROS_DOMAIN_ID"]) <= 100
    config = Path(urlparse(os.environ["CYCLONEDDS_URI"]).path)
    assert config == TEST_DIR / "cyclonedds_loopback.xml"
    for variable in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
        assert Path(os.environ[variable]) == TEST_DIR / "fastdds_loopback.xml"
    assert not set(DDS_UNSET) & set(os.environ)


def test_cyclonedds_config_binds_to_lo_with_multicast_off() -> None:
    root = ElementTree.parse(urlparse(os.environ["CYCLONEDDS_URI"]).path).getroot()
    domain = root.find("dds:Domain", NAMESPACE)
    general = domain.find("dds:General", NAMESPACE)
    interfaces = general.findall("dds:Interfaces/dds:NetworkInterface", NAMESPACE)
    assert [(i.get("name"), i.get("multicast")) for i in interfaces] == [("lo", "false")]
    assert general.findtext("dds:AllowMulticast", namespaces=NAMESPACE) == "false"
    peers = domain.findall("dds:Discovery/dds:Peers/dds:Peer", NAMESPACE)
    assert [p.get("address") for p in peers] == ["127.0.0.1"]


def test_fastdds_profile_has_one_loopback_udp_transport_unicast_only_and_4_mib_buffers() -> None:
    root = ElementTree.parse(os.environ["FASTDDS_DEFAULT_PROFILES_FILE"]).getroot()
    (transport,) = root.findall("f:transport_descriptors/f:transport_descriptor", FASTDDS)
    assert transport.findtext("f:type", namespaces=FASTDDS) == "UDPv4"
    assert [a.text for a in transport.findall("f:interfaceWhiteList/f:address", FASTDDS)] == ["127.0.0.1"]
    assert transport.findtext("f:sendBufferSize", namespaces=FASTDDS) == FOUR_MIB
    assert transport.findtext("f:receiveBufferSize", namespaces=FASTDDS) == FOUR_MIB

    (participant,) = root.findall("f:participant", FASTDDS)
    assert participant.get("is_default_profile") == "true"
    rtps = participant.find("f:rtps", FASTDDS)
    assert rtps.findtext("f:useBuiltinTransports", namespaces=FASTDDS) == "false"  # no SHM, no any-IP UDP
    used = [t.text for t in rtps.findall("f:userTransports/f:transport_id", FASTDDS)]
    assert used == [transport.findtext("f:transport_id", namespaces=FASTDDS)]
    lists = {
        "defaultUnicastLocatorList": rtps,
        "metatrafficUnicastLocatorList": rtps.find("f:builtin", FASTDDS),
        "initialPeersList": rtps.find("f:builtin", FASTDDS),
    }
    for name, parent in lists.items():
        addresses = [a.text for a in parent.findall(f"f:{name}/f:locator/f:udpv4/f:address", FASTDDS)]
        assert addresses == ["127.0.0.1"], name
    assert not [e.tag for e in root.iter() if "ulticast" in e.tag], "no multicast locator may be set"


PROBE = r"""
import json, os, socket, struct
import rclpy
from std_msgs.msg import String

rclpy.init()
node = rclpy.create_node("loopback_probe")
publisher = node.create_publisher(String, "loopback_probe", 10)
received = []
node.create_subscription(String, "loopback_probe", received.append, 10)
for _ in range(50):
    publisher.publish(String(data="probe"))
    rclpy.spin_once(node, timeout_sec=0.1)
    if received:
        break
inodes = set()
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if target.startswith("socket:["):
        inodes.add(target[len("socket:["):-1])
sockets = []
for line in open("/proc/self/net/udp").read().splitlines()[1:]:
    fields = line.split()
    if fields[9] in inodes:
        address, port = fields[1].split(":")
        sockets.append((socket.inet_ntoa(struct.pack("<I", int(address, 16))), int(port, 16)))
ipv6 = [line for line in open("/proc/self/net/udp6").read().splitlines()[1:] if line.split()[9] in inodes]
print(json.dumps({"sockets": sockets, "ipv6": len(ipv6), "received": len(received)}))
node.destroy_node()
rclpy.shutdown()
"""


@pytest.mark.ros
def test_a_participant_started_by_the_tests_receives_on_loopback_only() -> None:
    """What the profile does, not just what it says: a participant with the tests' environment talks to
    itself, listens on 127.0.0.1 only (its wildcard sockets are send sockets on ephemeral ports, which
    Fast DDS pins to the whitelisted interface) and binds no multicast discovery port."""
    pytest.importorskip("rclpy")
    if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        pytest.skip("checks what the Fast DDS profile does; another RMW is selected")
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["received"] > 0 and probe["ipv6"] == 0
    low, _ = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    sockets = [tuple(s) for s in probe["sockets"]]
    domain_base = 7400 + 250 * int(os.environ["ROS_DOMAIN_ID"])  # RTPS well-known ports of the domain
    listening = [s for s in sockets if s[0] == "127.0.0.1" and domain_base <= s[1] < domain_base + 250]
    assert listening, sockets  # discovery and user traffic on loopback
    assert all(address == "127.0.0.1" or port >= low for address, port in sockets), sockets
    assert all(port != domain_base for _, port in sockets), "the multicast discovery port is bound"

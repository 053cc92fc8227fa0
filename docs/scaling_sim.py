#!/usr/bin/env python3
"""Scaling model for herald: full replication against R-subset replication with interest
forwarding, for clusters of N nodes. Deterministic (fixed seed, SHA-256 rendezvous hashing),
standard library only. Run: python3 docs/scaling_sim.py

Model (assumptions, not measurements):
- ROOMS room channels; a room's share of publishes and its share of subscriptions both follow a
  Zipf law with exponent s over the same ranking (popular rooms are popular for both).
- Each node holds CONNECTIONS_PER_NODE connections, each subscribed to one room.
- Cluster-wide publish rate PUBLISH_RATE events/s, each EVENT_BYTES on the mesh (payload plus
  frame, QUIC and TLS overhead). A publish arrives at a node chosen uniformly: its origin.
- Full replication (herald today): the origin stores the event and pushes it to every other
  node, which stores it.
- R-subset: a channel's log lives on R replicas, the R nodes with the highest
  SHA-256(channel, node) score (rendezvous hashing). The origin sends the event to the replicas
  it is not one of (they store it) and to every other node with a subscriber of the channel
  (interest forwarding: it delivers, does not store). A non-replica origin does not store it.
- "ingest" is events a node commits to its log per second (what the measured per-node ceiling
  is about: group commit and fsync); "relay" is events a node receives only to deliver.
- Workloads:
  rooms     clients spread evenly over nodes, whatever their room (the worst case for interest
            forwarding: a popular room has subscribers everywhere);
  personal  half the publishes go to PERSONAL_CHANNELS per-user channels (user:{id}), one
            subscriber each on a uniformly chosen node; the other half to rooms as above;
  affinity  rooms, but each client is routed to one of its room's replicas (a load balancer
            hashing on the channel, as the replica set is known to every node).
The figures are expectations over the origin (exact sums over every origin) for one random
placement of the subscriptions (seed SEED).
"""

import bisect
import hashlib
import random

SEED = 14
ROOMS = 10_000
PERSONAL_CHANNELS = 20_000
CONNECTIONS_PER_NODE = 10_000
PUBLISH_RATE = 20_000.0
EVENT_BYTES = 600
REPLICAS = 3
NODES = (3, 10, 50)
WORKLOADS = (("rooms", 1.0), ("rooms", 0.8), ("rooms", 1.2), ("personal", 1.0), ("affinity", 1.0))


def zipf_weights(count, skew):
    raw = [1.0 / (rank**skew) for rank in range(1, count + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def replicas_of(channel, nodes, r):
    def score(node):
        digest = hashlib.sha256(f"{channel}/{node}".encode()).digest()
        return int.from_bytes(digest[:8], "big")

    return frozenset(sorted(range(nodes), key=score, reverse=True)[:r])


def channels_for(workload, nodes, skew, rng):
    """Answers [(publish rate, replicas, subscriber nodes, subscribers)] and connections per node."""
    r = min(REPLICAS, nodes)
    weights = zipf_weights(ROOMS, skew)
    cdf = []
    acc = 0.0
    for w in weights:
        acc += w
        cdf.append(acc)
    room_rate = PUBLISH_RATE * (0.5 if workload == "personal" else 1.0)
    replicas = [replicas_of(f"room:{c}", nodes, r) for c in range(ROOMS)]
    placed = [set() for _ in range(ROOMS)]
    counts = [0] * ROOMS
    connections = [0] * nodes
    for home in range(nodes):
        for _ in range(CONNECTIONS_PER_NODE):
            room = min(bisect.bisect_left(cdf, rng.random()), ROOMS - 1)
            node = home
            if workload == "affinity":
                node = rng.choice(sorted(replicas[room]))
            placed[room].add(node)
            counts[room] += 1
            connections[node] += 1
    channels = [
        (room_rate * weights[c], replicas[c], placed[c], counts[c]) for c in range(ROOMS)
    ]
    if workload == "personal":
        rate = (PUBLISH_RATE - room_rate) / PERSONAL_CHANNELS
        for user in range(PERSONAL_CHANNELS):
            node = rng.randrange(nodes)
            channels.append((rate, replicas_of(f"user:{user}", nodes, r), {node}, 1))
    return channels, connections


def simulate(workload, nodes, skew, rng):
    channels, connections = channels_for(workload, nodes, skew, rng)
    ingest = [0.0] * nodes
    relay = [0.0] * nodes
    sent_by = [0.0] * nodes
    transfers = 0.0
    typing_interest = 0.0
    hottest = max(rate for rate, *_ in channels) / PUBLISH_RATE
    for rate, replicas, subs, _ in channels:
        for node in replicas:
            ingest[node] += rate
        per_origin = rate / nodes
        for origin in range(nodes):
            relays = subs - replicas - {origin}
            sent = len(replicas - {origin}) + len(relays)
            transfers += per_origin * sent
            sent_by[origin] += per_origin * sent
            for node in relays:
                relay[node] += per_origin
            typing_interest += per_origin * len(subs - {origin})
    return {
        "ingest_mean": sum(ingest) / nodes,
        "ingest_max": max(ingest),
        "relay_mean": sum(relay) / nodes,
        "relay_max": max(relay),
        "transfers": transfers,
        "typing": typing_interest / PUBLISH_RATE,
        "hottest": hottest,
        "everywhere": sum(1 for _, _, subs, _ in channels if len(subs) == nodes),
        "connections_skew": max(connections) / (sum(connections) / nodes),
    }


def mb(events_per_s):
    return events_per_s * EVENT_BYTES / 1e6


def main():
    rng = random.Random(SEED)
    print(
        f"model: {ROOMS:,} rooms (Zipf s), {CONNECTIONS_PER_NODE:,} connections per node, "
        f"{PUBLISH_RATE:,.0f} publishes/s cluster-wide, {EVENT_BYTES} B per event on the mesh, "
        f"R = {REPLICAS}, seed {SEED}"
    )
    print("full replication, any workload: ingest per node = 20,000/s; mesh = (N-1) x rate")
    header = (
        f"{'workload':<14} {'N':>3} | {'full mesh MB/s':>14} | {'R=3 ingest mean/max':>19} | "
        f"{'R=3 relay mean/max':>18} | {'R=3 mesh MB/s':>13} | {'rate x':>6} | "
        f"{'typing copies':>13} | {'conn max/mean':>13}"
    )
    print(header)
    print("-" * len(header))
    for workload, skew in WORKLOADS:
        label = f"{workload} s={skew}"
        for nodes in NODES:
            out = simulate(workload, nodes, skew, rng)
            # How far the cluster-wide publish rate may grow before the busiest node ingests
            # what every node ingests under full replication (one node's ceiling).
            factor = PUBLISH_RATE / out["ingest_max"]
            print(
                f"{label:<14} {nodes:>3} | {mb(PUBLISH_RATE * (nodes - 1)):>14,.1f} | "
                f"{out['ingest_mean']:>8,.0f} / {out['ingest_max']:>8,.0f} | "
                f"{out['relay_mean']:>7,.0f} / {out['relay_max']:>8,.0f} | "
                f"{mb(out['transfers']):>13,.1f} | {factor:>6.2f} | "
                f"{nodes - 1:>4} -> {out['typing']:>5.2f} | {out['connections_skew']:>13.2f}"
            )
        print(
            f"{'':<14}     hottest channel {out['hottest'] * 100:.1f}% of publishes; at N = "
            f"{NODES[-1]}, {out['everywhere']:,} channels have a subscriber on every node"
        )


if __name__ == "__main__":
    main()

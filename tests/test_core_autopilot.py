"""The leader's reconcile policy (meshlite._core.autopilot): cases and properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshlite._core.autopilot import AddVoter, Autopilot, NodeFailed, RemoveVoter, plan

STATUSES = ("alive", "suspect", "dead", "left")


def pilot(dead_server_s: float = 300.0, grace_s: float = 60.0) -> Autopilot:
    return Autopilot(dead_server_s, grace_s)


def test_a_left_voter_goes_first_then_new_servers_join() -> None:
    p = pilot()
    statuses = {"a": "alive", "b": "left", "c": "alive", "d": "alive"}
    p.observe(statuses, 0.0, leading=True)
    actions = plan("a", {"a", "b", "c"}, statuses, {"a", "b", "c", "d"}, set(), p, 0.0)
    assert actions == [RemoveVoter("b", "left the mesh"), AddVoter("d")]


def test_a_dead_voter_is_removed_only_after_dead_server_s() -> None:
    p = pilot(dead_server_s=10.0)
    statuses = {"a": "alive", "b": "dead", "c": "alive"}
    p.observe(statuses, 100.0, leading=True)
    assert plan("a", {"a", "b", "c"}, statuses, {"a", "b", "c"}, set(), p, 105.0) == []
    p.observe(statuses, 110.0, leading=True)
    assert plan("a", {"a", "b", "c"}, statuses, {"a", "b", "c"}, set(), p, 110.0) == [
        RemoveVoter("b", "down for 10s")
    ]
    p.observe({**statuses, "b": "alive"}, 111.0, leading=True)  # it came back: forgiven
    assert "b" not in p.down_since


def test_no_removal_without_a_quorum_of_the_rest() -> None:
    p = pilot(dead_server_s=1.0)
    statuses = {"a": "alive", "b": "dead", "c": "dead"}
    p.observe(statuses, 0.0, leading=True)
    assert plan("a", {"a", "b", "c"}, statuses, {"a", "b", "c"}, set(), p, 50.0) == []


def test_sessions_of_dead_or_left_nodes_fail_and_absent_ones_after_the_grace() -> None:
    p = pilot(grace_s=60.0)
    statuses = {"a": "alive", "x": "dead", "y": "left", "z": "suspect"}
    p.observe(statuses, 0.0, leading=True)
    nodes = {"x", "y", "z", "gone"}
    assert plan("a", {"a"}, statuses, {"a"}, nodes, p, 1.0) == [NodeFailed("x"), NodeFailed("y")]
    assert NodeFailed("gone") in plan("a", {"a"}, statuses, {"a"}, nodes, p, 61.0)
    p.observe(statuses, 62.0, leading=False)  # lost leadership: the grace starts over
    p.observe(statuses, 63.0, leading=True)
    assert NodeFailed("gone") not in plan("a", {"a"}, statuses, {"a"}, nodes, p, 64.0)


names = st.sampled_from(["a", "b", "c", "d", "e"])


@given(
    voters=st.sets(names, min_size=1),
    statuses=st.dictionaries(names, st.sampled_from(STATUSES)),
    servers=st.sets(names),
    since=st.floats(0, 1000),
    now=st.floats(0, 2000),
)
def test_plan_never_removes_itself_nor_breaks_the_quorum(
    voters: set[str], statuses: dict[str, str], servers: set[str], since: float, now: float
) -> None:
    me = sorted(voters)[0]
    p = pilot(dead_server_s=5.0)
    p.observe(statuses, since, leading=True)
    actions = plan(me, voters, {**statuses, me: "alive"}, servers | voters, set(), p, now)
    up = {v for v in voters if statuses.get(v) in ("alive", "suspect")} | {me}
    for action in actions:
        if isinstance(action, RemoveVoter):
            assert action.name != me and action.name in voters
            if action.reason != "left the mesh":
                assert len(up) >= len(voters) // 2 + 1
        if isinstance(action, AddVoter):
            assert action.name not in voters

"""Engine bugs found in the review of the merged sync engine and stores: each test failed before its fix."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sync_support import FAST_RETRY, event

from connector_core.project import Project
from connector_core.state.base import Direction
from connector_core.sync.runner import run_connector


def _group_of_two(project: Project) -> None:
    project.eventlog.append(
        [
            event(
                "g1",
                "grp",
                "create-group",
                {
                    "name": "Smith",
                    "members": [
                        {"guid": "m1", "name": "John", "type": "individual"},
                        {"guid": "m2", "name": "Mary", "type": "individual"},
                    ],
                },
            ),
        ]
    )
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).push.counts.created == 3


def _unlinks_received(mock: httpx.Client) -> int:
    return int(mock.get("/_control/stats").json()["types_received"].get("remove-member", 0))


def test_a_member_removed_and_added_back_before_the_push_is_not_unlinked(
    project: Project, mock_server: httpx.Client
) -> None:
    """The push sends the entities' current state; an unlink of a member that is back in its group
    would end on the remote a membership the log still holds, and nothing would ever restore it."""
    _group_of_two(project)
    project.eventlog.append(
        [
            event("g2", "grp", "remove-member", {"memberId": "m2"}),
            event("g3", "grp", "add-member", {"members": [{"guid": "m2", "type": "individual"}]}),
        ]
    )
    group = project.eventlog.get_entity("grp")
    assert group is not None and "m2" in group.member_ids
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    assert _unlinks_received(mock_server) == 0


def test_a_member_removed_for_good_is_still_unlinked(project: Project, mock_server: httpx.Client) -> None:
    _group_of_two(project)
    project.eventlog.append([event("g2", "grp", "remove-member", {"memberId": "m2"})])
    assert run_connector(project, "reg", pull=False, retry=FAST_RETRY).ok
    assert _unlinks_received(mock_server) == 1


def test_with_systemic_after_0_refusals_are_dead_lettered_page_by_page(
    make_project: Callable[..., Project], mock_server: httpx.Client
) -> None:
    """``systemic_after: 0`` (never stop) has no streak to wait for: holding every refusal of one reason
    back until the run ends kept them all in memory (a list growing with the log) and the checkpoint
    unmoved for the whole run, so a crash near its end redid all of it."""
    project = make_project("    systemic_after: 0\n", batch_size=3, page_size=4)
    project.eventlog.append(
        [
            event(f"e{i}", f"hh{i}", "create-individual", {"entityName": "household", "household_name": "H"})
            for i in range(12)
        ]
    )
    reason = "Invalid field 'hh_size' on model 'res.partner'"
    mock_server.put("/_control/faults", json={"reject": {f"hh{i}": reason for i in range(12)}})
    seen: list[tuple[str | None, int]] = []

    def after_page(direction: str, done: int, total: int | None) -> None:
        if direction == "push":
            seen.append(
                (
                    project.state.get_checkpoint("reg", Direction.PUSH),
                    project.state.open_counts("reg").dead_letters,
                )
            )

    report = run_connector(project, "reg", pull=False, retry=FAST_RETRY, on_progress=after_page)
    assert report.ok, report.error
    assert seen == [("4", 4), ("8", 8), ("12", 12)]

"""A fleet of canary rollouts under API faults and operator kills, with invariants sampled
every 0.5 s: the scenario of `e2e/chaos.py` (which `make chaos` runs with harsher settings).

The local control plane fails a share of the operator's requests (and only the operator's:
rules are scoped to its user agents), in the real API server's formats: 500 before and
after a write is applied (a lost response), 429 with Retry-After, 409 on status patches,
503 on reads, and watch streams cut every 2 to 10 s. Through a client the faults do not
touch, the scenario checks what must hold at every moment, not only at the end:

- ready capacity never drops below `spec.replicas`;
- no canary Deployment is scaled down while its rollout progresses, unless it rolls back;
- `status.rollout.step` never goes backwards within one rollout;
- Ready never flaps.

At the end every rollout has succeeded with exactly one `RolloutStarted` and one
`RolloutSucceeded` Event, there are no orphans and no duplicate revisions, and the operator
writes nothing while idle, nor after a clean restart.

The idle window here is 12 s rather than `make chaos`'s 30 s: once a fleet is settled, the
longest timer the operator arms for it is 10 s (the first-status hold and the look at pods
of an InferenceService that is not Ready; the pod re-checks that back off towards 60 s run
only while pods are not ready, and none are), and watch streams are cut every 2 to 10 s
during the window, so 12 s sees every timer fire and several reconnects.
"""

from __future__ import annotations

import pytest

from e2e.chaos import Config, Report, Scenario
from e2e.operators import LeaseTiming, OperatorGroup

pytestmark = pytest.mark.simulated

IDLE_SECONDS = 12.0


def assert_held(report: Report) -> None:
    print(f"\nseed {report.seed}: faults injected {report.faults}; kills {report.kills}; "
          f"{report.samples} samples at {report.sample_cpu_ms:.1f} ms CPU each; rollouts took "
          f"{report.rollout_seconds:.1f}s, settled in {report.settle_seconds:.1f}s, scenario "
          f"{report.wall_seconds:.1f}s")
    for takeover in report.failovers:
        print(f"takeover: {takeover}")
    for problem in report.problems():
        print(f"problem: {problem}")
    assert sum(n for kind, n in report.faults.items() if kind != "watch_cut") > 0, report.faults
    assert report.faults.get("watch_cut", 0) > 0, report.faults
    assert report.samples > 10
    assert report.kills == report.config.kills, f"only {report.kills} kills happened during the rollouts"
    assert report.succeeded == report.services, report.not_succeeded
    assert report.violations == [], report.violations[:10]
    assert report.tracebacks == [], report.tracebacks[0]
    assert report.orphans == [], report.orphans[:10]
    assert report.duplicate_revisions == [], report.duplicate_revisions[:10]
    assert report.missing_events() == {}, report.missing_events()
    assert report.unsettled == [], report.problems()
    assert report.idle_writes == [], report.problems()
    assert report.restart_failures == [], report.restart_failures
    assert report.restart_writes == [], report.problems()
    # One Event object per transition: a repeat (a retried post, a transition decided again
    # after its status write failed) raises the count of the same object.
    assert report.duplicate_events() == {}, report.duplicate_events()
    assert report.problems() == []


def test_a_fleet_of_canary_rollouts_holds_its_invariants_under_api_faults_and_operator_kills(
        local_cluster, kubectl, namespace, operator_process):
    config = Config(seed=7, services=30, kills=2, operators=1, idle_seconds=IDLE_SECONDS)
    report = Scenario(local_cluster, kubectl, namespace, OperatorGroup([operator_process]), config).run()
    # Without leader election nothing makes the operator exit on its own.
    assert report.unplanned_restarts == 0, operator_process.log()[-3000:]
    assert_held(report)


def test_a_standby_takes_over_from_a_killed_leader_within_the_lease_and_the_invariants_hold(
        local_cluster, kubectl, namespace, operator_replicas):
    timing = LeaseTiming(lease_duration=4, renew_deadline=3, retry_period=1)
    operators = operator_replicas(2, namespace, timing)
    config = Config(seed=11, services=10, kills=1, operators=2, lease=timing, idle_seconds=IDLE_SECONDS)
    report = Scenario(local_cluster, kubectl, namespace, operators, config).run()
    assert len(report.failovers) == 1
    takeover = report.failovers[0]
    # The Lease changed hands, to the standby, within lease duration + 5 s of the kill.
    assert takeover.new_leader and takeover.new_leader != takeover.killed, takeover
    assert takeover.lease_changed_seconds is not None, takeover
    assert takeover.lease_changed_seconds <= config.takeover_bound_seconds, takeover
    assert takeover.leader_log_seconds is not None, takeover
    assert takeover.leader_log_seconds <= config.takeover_bound_seconds, takeover
    assert report.late_takeovers() == []
    assert_held(report)

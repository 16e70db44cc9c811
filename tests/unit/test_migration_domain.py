"""The migration's pure parts: its steps, `kubectl rollout status`'s judgement, the bodies it
writes (merge patches, the green copy, the blue-green routes) and the error-rate decision."""

from __future__ import annotations

import copy

from jobs.domain import migration as model
from jobs.domain import migration_bodies as bodies
from playground.sample_mesh import deployment, virtual_service

TIERS = {"pilot": ["a", "b"], "core": ["c"], "critical": ["d"]}


def test_steps_follow_the_phases_and_the_tiers_in_order() -> None:
    steps = model.build_steps((1, 2, 3, 4, 5), TIERS)
    assert [(s.phase, s.service) for s in steps][:7] == [
        (1, None), (2, "a"), (2, "a"), (2, "a"), (2, "b"), (2, "b"), (2, "b")]
    assert [s.kind for s in steps if s.service == "c"] == ["inject", "rollout", "watch"]
    assert [s.kind for s in steps if s.phase == 5] == list(model.NAMESPACE_STEPS[5])
    assert len({s.key for s in steps}) == len(steps)
    assert model.build_steps((3,), TIERS) == tuple(s for s in steps if s.phase == 3)


def test_past_cutover_only_once_the_cutover_is_done() -> None:
    steps = model.build_steps((4,), TIERS)
    wf = model.Workflow(id="w", namespace="n", request_id="r", requester="U", channel="C",
                        phases=(4,), steps=steps)
    cut = next(i for i, s in enumerate(steps) if s.kind == model.CUTOVER)
    assert not model.past_cutover(wf.model_copy(update={"cursor": cut}), cut)
    done = wf.remember(steps[cut], done=True).model_copy(update={"cursor": cut})
    assert model.past_cutover(done, cut)
    assert model.past_cutover(wf, cut + 1) and not model.past_cutover(wf, cut - 1)


def test_a_workflow_written_by_a_newer_meshbot_still_loads() -> None:
    """A rolling upgrade: the new pods write fields the old ones do not know yet."""
    steps = model.build_steps((2,), TIERS)
    wf = model.Workflow(id="w", namespace="n", request_id="r", requester="U", channel="C",
                        phases=(2,), steps=steps, cursor=1)
    stored = wf.model_dump(mode="json")
    stored["a_field_from_a_later_release"] = {"x": 1}
    stored["steps"][0]["another_new_field"] = "y"
    assert model.Workflow.model_validate(stored) == wf


def test_rollout_complete_as_kubectl_judges() -> None:
    d = deployment("x", {"app": "x"}, "n", replicas=2)
    d["metadata"]["generation"] = 3
    d["status"] = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                   "availableReplicas": 2}
    assert model.rollout_complete(d) == (False, "waiting for the controller to see generation 3")
    d["status"].update(observedGeneration=3, updatedReplicas=1, replicas=3)
    assert model.rollout_complete(d) == (False, "1 of 2 replicas updated")
    d["status"].update(updatedReplicas=2)
    assert model.rollout_complete(d) == (False, "1 old replicas pending termination")
    d["status"].update(replicas=2, availableReplicas=1)
    assert not model.rollout_complete(d)[0]
    d["status"].update(availableReplicas=2)
    assert model.rollout_complete(d) == (True, "2/2 updated and available")


def test_the_undo_patch_restores_the_template_exactly() -> None:
    before = deployment("x", {"app": "x"}, "n")
    after = bodies.with_injection(before)
    patch = bodies.undo_patch(after, bodies.template(before))
    assert patch == {"spec": {"template": {"metadata": {"annotations": None}}}}
    saved = bodies.template(before)
    saved["metadata"]["annotations"] = {"keep": "me"}
    assert bodies.undo_patch(after, saved) == {"spec": {"template": {"metadata": {
        "annotations": {bodies.INJECT: None, "keep": "me"}}}}}


def test_the_green_copy_never_shares_pods_with_blue() -> None:
    blue = deployment("svc-v1", {"app": "svc", "version": "v1"}, "n")
    blue["metadata"].update(uid="u", resourceVersion="7", annotations={
        "deployment.kubernetes.io/revision": "3", "team": "pay"})
    green = bodies.green_copy(blue, "version", "wf1")
    assert green["metadata"] == {"name": "svc-v1-green", "namespace": "n", "labels": {
        "app": "svc", "version": "green", bodies.MIGRATION_LABEL: "wf1"},
        "annotations": {"team": "pay"}}
    assert green["spec"]["selector"]["matchLabels"] == {"app": "svc", "version": "green"}
    assert green["spec"]["template"]["metadata"]["labels"] == {"app": "svc", "version": "green"}
    assert green["spec"]["template"]["metadata"]["annotations"] == {bodies.INJECT: "true"}
    assert blue["spec"]["selector"]["matchLabels"]["version"] == "v1"  # blue is not touched


def test_blue_green_routes_keep_other_routes_and_come_back() -> None:
    http = virtual_service("svc")["spec"]["http"]
    ab = {"match": [{"headers": {"x-beta": {"exact": "1"}}}],
          "route": [{"destination": {"host": "svc", "subset": "canary"}}]}
    original = [ab, *copy.deepcopy(http)]
    split = bodies.blue_green_http(original, 10)
    assert split[0]["match"] == [{"headers": {"canary": {"exact": "true"}}}]
    assert split[1] == ab
    assert bodies.live_weights(split) == {"blue": 90, "green": 10}
    assert bodies.live_weights(bodies.blue_green_http(split, 100)) == {"blue": 0, "green": 100}
    assert len(bodies.blue_green_http(split, 100)) == len(split)  # one header route, not two
    assert original[0] == ab and bodies.live_weights(original) == {"stable": 100, "canary": 0}


def test_subsets_are_added_then_removed() -> None:
    subsets = [{"name": "stable", "labels": {"version": "v1"}}]
    added = bodies.with_subsets(subsets, {"blue": {"version": "v1"},
                                          "green": {"version": "green"}})
    assert [s["name"] for s in added] == ["stable", "blue", "green"]
    pointed = bodies.with_subsets(added, {"stable": {"version": "green"}})
    assert bodies.without_subsets(pointed, ["blue", "green"]) == [
        {"name": "stable", "labels": {"version": "green"}}]


def test_injection_label_keeps_a_revision() -> None:
    assert bodies.injection_labels({}) == {"istio-injection": "enabled"}
    assert bodies.injection_labels({"istio.io/rev": "1-22"}) is None
    assert bodies.injection_labels({"istio-injection": "enabled"}) is None
    assert bodies.injection_labels({"istio-injection": "disabled"}) == {
        "istio-injection": "enabled"}


def test_error_percent_and_breach() -> None:
    assert model.error_percent(None, 20.0) == 0.0  # no 5xx series yet: no errors
    assert model.error_percent(0.5, 20.0) == 2.5
    assert model.error_percent(0.0, 0.0) is None  # no traffic: no evidence
    assert model.breached(2.5, 1.0) and not model.breached(1.0, 1.0)
    assert not model.breached(None, 1.0)
    errors, total = model.error_queries("svc", "n", "30s", "green")
    assert 'destination_version="green"' in errors and 'response_code=~"5.."' in errors
    assert "response_code" not in total

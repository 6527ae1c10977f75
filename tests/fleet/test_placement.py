"""Placement rules over a snapshot of the fleet: no database, just GPUs, nodes and requests."""

from __future__ import annotations

import pytest

from appliance.fleet.placement import (
    GIB,
    GpuRequest,
    GpuRoom,
    NoCapacity,
    NodeLoad,
    Slot,
    place_on_cpus,
    place_on_gpus,
)


def gpu(
    index: int,
    *,
    node: int = 1,
    total_gib: float = 80,
    used_gib: float | None = 0,
    reserved_gib: float = 0,
) -> GpuRoom:
    return GpuRoom(
        node_id=node,
        node_name=f"node-{node}",
        index=index,
        total_bytes=int(total_gib * GIB),
        used_bytes=None if used_gib is None else int(used_gib * GIB),
        reserved_bytes=int(reserved_gib * GIB),
    )


def request(
    *,
    replicas: int = 1,
    tp: int = 1,
    utilization: float = 0.9,
    weights_gib: float = 1,
    gpu_indices: tuple[int, ...] = (),
) -> GpuRequest:
    return GpuRequest(
        replicas=replicas,
        tensor_parallel_size=tp,
        gpu_memory_utilization=utilization,
        weight_bytes=int(weights_gib * GIB),
        gpu_indices=gpu_indices,
    )


def refusal(req: GpuRequest, gpus: list[GpuRoom]) -> list[str]:
    with pytest.raises(NoCapacity) as refused:
        place_on_gpus(req, gpus)
    assert str(refused.value) == "; ".join(refused.value.reasons)
    return refused.value.reasons


# --- what a GPU has room for ------------------------------------------------------------------


def test_available_memory_is_total_less_reservations_and_memory_used_by_others() -> None:
    # 30 GiB reserved by engines not started yet, 10 GiB in use by some other process.
    assert gpu(0, used_gib=10, reserved_gib=30).available_bytes == 40 * GIB
    # The same, once our engines run: NVML's 40 GiB in use are our 30 plus the other 10.
    running = GpuRoom(
        node_id=1,
        node_name="node-1",
        index=0,
        total_bytes=80 * GIB,
        used_bytes=40 * GIB,
        reserved_bytes=30 * GIB,
        started_bytes=30 * GIB,
    )
    assert running.available_bytes == 40 * GIB
    assert gpu(0, used_gib=None, reserved_gib=10).available_bytes == 70 * GIB


def test_engines_not_yet_started_and_foreign_memory_together_are_not_over_committed() -> None:
    busy = gpu(0, used_gib=40, reserved_gib=36)  # a 0.45 engine placed, not started; 40 in use
    with pytest.raises(NoCapacity):
        place_on_gpus(request(utilization=0.45), [busy])


def test_an_engine_on_an_empty_gpu_reserves_its_share_of_the_gpu() -> None:
    slots = place_on_gpus(request(utilization=0.5), [gpu(0)])
    assert slots == [Slot(node_id=1, gpu_indices=(0,), reserved_bytes_per_gpu=40 * GIB)]


def test_two_small_engines_share_one_gpu_when_both_fit() -> None:
    slots = place_on_gpus(request(replicas=2, utilization=0.4), [gpu(0)])
    assert [s.gpu_indices for s in slots] == [(0,), (0,)]
    assert all(s.reserved_bytes_per_gpu == int(80 * GIB * 0.4) for s in slots)


def test_a_gpu_whose_memory_is_unknown_to_nvml_is_judged_by_reservations() -> None:
    slots = place_on_gpus(request(utilization=0.5), [gpu(0, used_gib=None, reserved_gib=40)])
    assert slots[0].gpu_indices == (0,)


# --- refusals ---------------------------------------------------------------------------------


def test_weights_bigger_than_what_an_engine_may_use_are_refused() -> None:
    reasons = refusal(request(utilization=0.5, weights_gib=60), [gpu(0)])
    assert reasons == [
        "node-1 GPU 0: the weights (60.0 GiB per GPU) do not fit in the 40.0 GiB an engine may use"
    ]


def test_not_enough_free_memory_is_refused_with_what_is_free() -> None:
    reasons = refusal(request(utilization=0.9), [gpu(0, used_gib=20)])
    assert reasons == ["node-1 GPU 0: needs 72.0 GiB, 60.0 GiB free"]


def test_memory_already_reserved_by_placed_engines_is_not_taken_again() -> None:
    reasons = refusal(request(utilization=0.5), [gpu(0, reserved_gib=72)])
    assert reasons == ["node-1 GPU 0: needs 40.0 GiB, 8.0 GiB free"]


def test_memory_used_by_something_else_is_not_ours_to_take() -> None:
    # No engine reserved anything, but NVML sees 50 GiB in use by a foreign process.
    reasons = refusal(request(utilization=0.5), [gpu(0, used_gib=50)])
    assert reasons == ["node-1 GPU 0: needs 40.0 GiB, 30.0 GiB free"]


def test_over_full_gpu_reports_zero_free_not_a_negative_amount() -> None:
    reasons = refusal(request(utilization=0.5), [gpu(0, reserved_gib=72, used_gib=90)])
    assert reasons == ["node-1 GPU 0: needs 40.0 GiB, 0.0 GiB free"]


def test_every_refused_gpu_is_named_in_the_reasons() -> None:
    reasons = refusal(
        request(utilization=0.9), [gpu(0, used_gib=20), gpu(1, node=2, reserved_gib=72)]
    )
    assert reasons == [
        "node-1 GPU 0: needs 72.0 GiB, 60.0 GiB free",
        "node-2 GPU 1: needs 72.0 GiB, 8.0 GiB free",
    ]


def test_no_gpus_at_all_is_refused() -> None:
    assert refusal(request(), []) == ["no online node has a GPU"]


def test_replicas_that_do_not_all_fit_are_refused_as_a_whole() -> None:
    # One 72 GiB engine fits per GPU: the third replica has nowhere to go.
    reasons = refusal(request(replicas=3, utilization=0.9), [gpu(0), gpu(1)])
    assert reasons == [
        "node-1 GPU 0: needs 72.0 GiB, 8.0 GiB free",
        "node-1 GPU 1: needs 72.0 GiB, 8.0 GiB free",
    ]


# --- tensor parallelism -----------------------------------------------------------------------


def test_tensor_parallel_engine_takes_that_many_gpus_of_one_node() -> None:
    slots = place_on_gpus(request(tp=2, weights_gib=100), [gpu(0), gpu(1), gpu(2, used_gib=40)])
    assert slots == [
        Slot(node_id=1, gpu_indices=(0, 1), reserved_bytes_per_gpu=int(80 * GIB * 0.9))
    ]


def test_tensor_parallel_weights_are_split_across_the_gpus() -> None:
    # 100 GiB cannot fit one 72 GiB engine but fits as 2 x 50 GiB; 4 x 25 GiB also fits.
    assert refusal(request(weights_gib=100), [gpu(0)])[0].startswith(
        "node-1 GPU 0: the weights (100.0 GiB per GPU)"
    )
    assert place_on_gpus(request(tp=4, weights_gib=100), [gpu(i) for i in range(4)])


def test_tensor_parallel_gpus_spread_over_two_nodes_are_refused() -> None:
    reasons = refusal(request(tp=2), [gpu(0, node=1), gpu(0, node=2)])
    assert reasons == ["a tensor-parallel size of 2 needs that many GPUs with room on one node"]


def test_tensor_parallel_on_a_node_with_one_free_gpu_is_refused_with_why_the_other_is_full() -> (
    None
):
    reasons = refusal(request(tp=2), [gpu(0), gpu(1, reserved_gib=72)])
    assert reasons == [
        "node-1 GPU 1: needs 72.0 GiB, 8.0 GiB free",
        "a tensor-parallel size of 2 needs that many GPUs with room on one node",
    ]


def test_tensor_parallel_group_of_mixed_gpus_reserves_enough_on_the_biggest() -> None:
    # vLLM claims the utilization share of each GPU's own memory: 72 GiB on the 80 GiB GPU.
    # Recording less would let a later engine over-commit that GPU.
    slots = place_on_gpus(request(tp=2), [gpu(0, total_gib=80), gpu(1, total_gib=40)])
    assert slots[0].gpu_indices == (0, 1)
    assert slots[0].reserved_bytes_per_gpu >= int(80 * GIB * 0.9)


# --- spreading --------------------------------------------------------------------------------


def test_replicas_go_to_the_gpus_with_most_room_first() -> None:
    gpus = [gpu(0, used_gib=30), gpu(1, used_gib=10), gpu(2, used_gib=20)]
    slots = place_on_gpus(request(replicas=2, utilization=0.4), gpus)
    assert [s.gpu_indices for s in slots] == [(1,), (2,)]


def test_replicas_spread_over_nodes_before_doubling_up() -> None:
    gpus = [gpu(0, node=1), gpu(0, node=2)]
    slots = place_on_gpus(request(replicas=2, utilization=0.3), gpus)
    assert sorted((s.node_id, s.gpu_indices) for s in slots) == [(1, (0,)), (2, (0,))]


def test_a_placed_replica_counts_against_the_next_one() -> None:
    # GPU 0 has more room at first; after one 32 GiB engine, GPU 1 has more.
    gpus = [gpu(0), gpu(1, used_gib=20)]
    slots = place_on_gpus(request(replicas=3, utilization=0.4), gpus)
    assert [s.gpu_indices for s in slots] == [(0,), (1,), (0,)]


def test_equal_room_is_broken_by_the_lowest_index() -> None:
    slots = place_on_gpus(request(replicas=1), [gpu(2), gpu(0), gpu(1)])
    assert slots[0].gpu_indices == (0,)


# --- chosen GPUs ------------------------------------------------------------------------------


def test_chosen_gpus_are_used_even_when_others_have_more_room() -> None:
    gpus = [gpu(0), gpu(1, used_gib=20), gpu(2, used_gib=20)]
    slots = place_on_gpus(request(tp=2, utilization=0.5, gpu_indices=(1, 2)), gpus)
    assert slots[0].gpu_indices == (1, 2)


def test_chosen_gpu_without_room_is_refused_rather_than_moved() -> None:
    reasons = refusal(request(gpu_indices=(1,)), [gpu(0), gpu(1, reserved_gib=72)])
    assert reasons == ["node-1 GPU 1: needs 72.0 GiB, 8.0 GiB free"]


def test_chosen_gpus_must_match_the_tensor_parallel_size() -> None:
    reasons = refusal(request(tp=2, gpu_indices=(0,)), [gpu(0), gpu(1)])
    assert reasons == ["1 GPUs chosen for a tensor-parallel size of 2"]


def test_chosen_gpu_index_that_the_node_lacks_is_refused() -> None:
    reasons = refusal(request(tp=2, gpu_indices=(1, 7)), [gpu(0), gpu(1)])
    assert reasons == ["no GPU with index 7 on the chosen node"]


def test_all_replicas_share_the_chosen_gpus() -> None:
    slots = place_on_gpus(request(replicas=2, utilization=0.3, gpu_indices=(1,)), [gpu(0), gpu(1)])
    assert [s.gpu_indices for s in slots] == [(1,), (1,)]


# --- CPU engines ------------------------------------------------------------------------------


def test_cpu_engines_go_to_the_least_loaded_node() -> None:
    nodes = [NodeLoad(1, "alpha", engines=3), NodeLoad(2, "beta", engines=1)]
    assert place_on_cpus(1, nodes) == [Slot(node_id=2, gpu_indices=(), reserved_bytes_per_gpu=0)]


def test_cpu_replicas_fill_up_the_least_loaded_nodes_one_at_a_time() -> None:
    nodes = [
        NodeLoad(1, "alpha", engines=2),
        NodeLoad(2, "beta", engines=0),
        NodeLoad(3, "gamma", engines=1),
    ]
    slots = place_on_cpus(4, nodes)
    # beta 0→1; beta and gamma tie at 1 → beta (by name) 2; gamma 1→2; all at 2 → alpha.
    assert [s.node_id for s in slots] == [2, 2, 3, 1]


def test_cpu_ties_are_broken_by_node_name() -> None:
    nodes = [NodeLoad(1, "zulu", engines=0), NodeLoad(2, "alpha", engines=0)]
    assert [s.node_id for s in place_on_cpus(1, nodes)] == [2]


def test_cpu_engine_without_an_online_node_is_refused() -> None:
    with pytest.raises(NoCapacity) as refused:
        place_on_cpus(1, [])
    assert refused.value.reasons == ["no online node to run a CPU engine"]

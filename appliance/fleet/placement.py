"""Where a deployment's engines go. Pure functions over a snapshot of the fleet, so the rules
can be tested without a database.

vLLM claims ``gpu_memory_utilization`` times a GPU's total memory at start-up, so that is what an
engine reserves on each of its GPUs. A GPU has room when that reservation fits beside what other
engines reserved (started or not) and what NVML sees in use by anything else; nothing is ever
over-committed. A tensor-parallel
engine needs that many GPUs with room on one node.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

GIB = 1024**3


@dataclass(frozen=True)
class GpuRoom:
    """One GPU as placement sees it."""

    node_id: int
    node_name: str
    index: int
    total_bytes: int
    used_bytes: int | None  # what NVML last saw in use; None if unknown
    reserved_bytes: int  # what engines placed on it reserve, started or not
    started_bytes: int = 0  # the part of reserved_bytes whose engines run (so NVML sees it)

    @property
    def foreign_bytes(self) -> int:
        """Memory in use by something other than our running engines: not ours to take."""
        return max(0, (self.used_bytes or 0) - self.started_bytes)

    @property
    def available_bytes(self) -> int:
        return self.total_bytes - self.reserved_bytes - self.foreign_bytes


@dataclass(frozen=True)
class NodeLoad:
    """A node as CPU placement sees it."""

    node_id: int
    node_name: str
    engines: int


@dataclass(frozen=True)
class GpuRequest:
    replicas: int
    tensor_parallel_size: int
    gpu_memory_utilization: float
    weight_bytes: int  # the model's files; split across tensor-parallel GPUs
    gpu_indices: tuple[int, ...] = ()  # only these GPUs (of a chosen node), if given


@dataclass(frozen=True)
class Slot:
    """Where one replica runs."""

    node_id: int
    gpu_indices: tuple[int, ...]
    reserved_bytes_per_gpu: int


class NoCapacity(Exception):
    """No placement fits; ``reasons`` says why, GPU by GPU."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def _gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def _refusal(gpu: GpuRoom, need: int, weights_per_gpu: int) -> str | None:
    where = f"{gpu.node_name} GPU {gpu.index}"
    if weights_per_gpu > need:
        return (
            f"{where}: the weights ({_gib(weights_per_gpu)} per GPU) do not fit in the "
            f"{_gib(need)} an engine may use"
        )
    if need > gpu.available_bytes:
        return f"{where}: needs {_gib(need)}, {_gib(max(gpu.available_bytes, 0))} free"
    return None


def place_on_gpus(request: GpuRequest, gpus: list[GpuRoom]) -> list[Slot]:
    """One slot per replica, spreading replicas over the GPUs with the most room."""
    if request.gpu_indices and len(request.gpu_indices) != request.tensor_parallel_size:
        raise NoCapacity(
            [
                f"{len(request.gpu_indices)} GPUs chosen for a tensor-parallel size of "
                f"{request.tensor_parallel_size}"
            ]
        )
    wanted = set(request.gpu_indices)
    rooms = {(g.node_id, g.index): g for g in gpus if not wanted or g.index in wanted}
    if wanted and {index for _, index in rooms} != wanted:
        missing = sorted(wanted - {index for _, index in rooms})
        raise NoCapacity([f"no GPU with index {i} on the chosen node" for i in missing])
    if not rooms:
        raise NoCapacity(["no online node has a GPU"])
    weights_per_gpu = -(-request.weight_bytes // request.tensor_parallel_size)
    slots: list[Slot] = []
    for _ in range(request.replicas):
        best: tuple[int, list[GpuRoom], int] | None = None
        reasons: list[str] = []
        for node_id in sorted({n for n, _ in rooms}):
            fitting = []
            for gpu in sorted((g for (n, _), g in rooms.items() if n == node_id), key=_by_index):
                need = int(gpu.total_bytes * request.gpu_memory_utilization)
                refusal = _refusal(gpu, need, weights_per_gpu)
                if refusal:
                    reasons.append(refusal)
                else:
                    fitting.append(gpu)
            if len(fitting) < request.tensor_parallel_size:
                continue
            chosen = sorted(fitting, key=lambda g: (-g.available_bytes, g.index))[
                : request.tensor_parallel_size
            ]
            least = min(g.available_bytes for g in chosen)
            if best is None or least > best[0]:
                # vLLM claims the share of each GPU's own memory; the slot records one number
                # per GPU, so record the largest claim: never less than what is taken.
                need = int(max(g.total_bytes for g in chosen) * request.gpu_memory_utilization)
                best = (least, chosen, need)
        if best is None:
            if request.tensor_parallel_size > 1:
                reasons.append(
                    f"a tensor-parallel size of {request.tensor_parallel_size} needs that many "
                    "GPUs with room on one node"
                )
            raise NoCapacity(reasons or ["no GPU has room"])
        _, chosen, need = best
        for gpu in chosen:
            need_here = int(gpu.total_bytes * request.gpu_memory_utilization)
            rooms[(gpu.node_id, gpu.index)] = replace(
                gpu, reserved_bytes=gpu.reserved_bytes + need_here
            )
        slots.append(
            Slot(
                node_id=chosen[0].node_id,
                gpu_indices=tuple(sorted(g.index for g in chosen)),
                reserved_bytes_per_gpu=need,
            )
        )
    return slots


def _by_index(gpu: GpuRoom) -> int:
    return gpu.index


def place_on_cpus(replicas: int, nodes: list[NodeLoad]) -> list[Slot]:
    """CPU engines (the demo and tests): the least busy online nodes, one replica at a time."""
    if not nodes:
        raise NoCapacity(["no online node to run a CPU engine"])
    load = {n.node_id: n.engines for n in nodes}
    names = {n.node_id: n.node_name for n in nodes}
    slots = []
    for _ in range(replicas):
        node_id = min(load, key=lambda n: (load[n], names[n]))
        load[node_id] += 1
        slots.append(Slot(node_id=node_id, gpu_indices=(), reserved_bytes_per_gpu=0))
    return slots

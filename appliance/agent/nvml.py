"""A one-shot NVML snapshot of this host's GPUs, for the node agent.

``collect()`` initialises NVML, reads every GPU and shuts NVML down again. What it reads follows
the default metric set of NVIDIA's DCGM exporter (clocks, temperatures, power, energy,
utilisation, framebuffer, remapped rows) plus ECC totals, throttle reasons, MIG mode, PCIe and
the compute processes.

A host without the driver is not an error for the caller: ``collect()`` returns no GPUs and says
why in ``HostGpus.error``. Any single reading that NVML refuses (not supported on this GPU, no
permission, an older driver without the function) is ``None``, never ``0``: a missing reading
must not look like an idle, cool or healthy GPU.

This module must not import Django: ``python -m appliance.agent.nvml`` prints the snapshot as JSON.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import pynvml

T = TypeVar("T")


def _exceptions(*candidates: object) -> tuple[type[BaseException], ...]:
    """The exception classes among ``candidates`` (None where this pynvml lacks one)."""
    return tuple(c for c in candidates if isinstance(c, type) and issubclass(c, BaseException))


# Errors that mean "this reading is not available", as opposed to a bug in this module.
# NVMLLibraryMismatchError (not an NVMLError) is what pynvml raises when an unversioned wrapper
# finds that the driver lacks the function it calls (e.g. ...ComputeRunningProcesses_v3).
_UNAVAILABLE = _exceptions(pynvml.NVMLError, getattr(pynvml, "NVMLLibraryMismatchError", None))

# What a versioned call raises when this driver or pynvml predates it: retry the older call.
_VERSION_MISMATCH = _exceptions(
    TypeError,
    getattr(pynvml, "NVMLError_FunctionNotFound", None),
    getattr(pynvml, "NVMLError_ArgumentVersionMismatch", None),
    getattr(pynvml, "NVMLLibraryMismatchError", None),
)

# (suffix of the pynvml constant, name reported), in bit order. Newer pynvml spells the
# constants nvmlClocksEventReason*, older ones nvmlClocksThrottleReason*; either is accepted.
_CLOCK_EVENT_REASONS: tuple[tuple[str, str], ...] = (
    ("GpuIdle", "gpu_idle"),
    ("ApplicationsClocksSetting", "applications_clocks_setting"),
    ("SwPowerCap", "sw_power_cap"),
    ("HwSlowdown", "hw_slowdown"),
    ("SyncBoost", "sync_boost"),
    ("SwThermalSlowdown", "sw_thermal_slowdown"),
    ("HwThermalSlowdown", "hw_thermal_slowdown"),
    ("HwPowerBrakeSlowdown", "hw_power_brake_slowdown"),
    ("DisplayClockSetting", "display_clock_setting"),
    ("BoardLimit", "board_limit"),
    ("Reliability", "reliability"),
)

_INIT_ERRORS: dict[str, str] = {
    "NVMLError_LibraryNotFound": "NVML library not found (no NVIDIA driver installed)",
    "NVMLError_DriverNotLoaded": "NVIDIA driver not loaded",
    "NVMLError_NoPermission": "no permission to use NVML",
    "NVMLError_LibRmVersionMismatch": "NVML library and kernel driver versions differ",
}


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a GPU; ``used_memory_bytes`` is None where NVML cannot tell."""

    pid: int
    used_memory_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one moment. Every reading is None when NVML could not provide it."""

    index: int
    uuid: str | None
    name: str | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    utilization_gpu_pct: int | None
    utilization_memory_pct: int | None
    temperature_c: int | None
    memory_temperature_c: int | None
    power_w: float | None
    power_limit_w: float | None
    energy_mj: int | None  # total since the driver was loaded, millijoules
    sm_clock_mhz: int | None
    memory_clock_mhz: int | None
    ecc_corrected: int | None  # volatile (since the driver was loaded)
    ecc_uncorrected: int | None
    remapped_rows_correctable: int | None
    remapped_rows_uncorrectable: int | None
    remapped_rows_pending: bool | None
    remapped_rows_failure: bool | None
    pcie_bus_id: str | None
    pcie_tx_kbps: int | None
    pcie_rx_kbps: int | None
    mig_mode: bool | None  # the current mode: True when MIG is enabled
    throttle_reasons: tuple[str, ...] | None  # () means "not throttled", None "unknown"
    processes: tuple[GpuProcess, ...] | None  # None when NVML cannot list them

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HostGpus:
    """This host's GPUs; ``error`` says why there are none (or why some could not be read)."""

    driver_version: str | None
    cuda_driver_version: str | None  # e.g. "12.4"
    gpus: tuple[GpuSample, ...]
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _field(fn: Callable[..., T] | None, *args: Any) -> T | None:
    """``fn(*args)``, or None when the function is absent or NVML refuses the reading."""
    if fn is None:
        return None
    try:
        return fn(*args)
    except _UNAVAILABLE:
        return None


def _nvml(name: str) -> Callable[..., Any] | None:
    """The pynvml function ``name`` (looked up at call time), or None in an older pynvml."""
    return getattr(pynvml, name, None)


def _text(value: str | bytes | None) -> str | None:
    """NVML strings are ``bytes`` in old pynvml releases."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _milli(value: float | None) -> float | None:
    """Milliwatts to watts."""
    return None if value is None else value / 1000.0


def _as_int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _cuda_version(value: int | None) -> str | None:
    """NVML's CUDA version integer (12040) as nvidia-smi shows it ("12.4")."""
    if value is None:
        return None
    return f"{value // 1000}.{(value % 1000) // 10}"


def _init_error(exc: BaseException) -> str:
    known = _INIT_ERRORS.get(type(exc).__name__)
    return known if known else f"NVML initialisation failed: {exc}"


def decode_clock_event_reasons(mask: int) -> tuple[str, ...]:
    """The named reasons set in a clocks-event (throttle) bitmask; unknown bits as ``0x...``."""
    names: list[str] = []
    known = 0
    for suffix, name in _CLOCK_EVENT_REASONS:
        bit = getattr(pynvml, f"nvmlClocksEventReason{suffix}", None)
        if bit is None:
            bit = getattr(pynvml, f"nvmlClocksThrottleReason{suffix}", None)
        if not bit:
            continue
        known |= bit
        if mask & bit:
            names.append(name)
    rest = mask & ~known
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"unknown_0x{bit:x}")
            rest &= ~bit
        bit <<= 1
    return tuple(names)


def _temperature(handle: Any) -> int | None:
    """GPU core temperature: nvmlDeviceGetTemperatureV, else the older nvmlDeviceGetTemperature."""
    sensor = pynvml.NVML_TEMPERATURE_GPU
    versioned = _nvml("nvmlDeviceGetTemperatureV")
    if versioned is not None:
        try:
            return versioned(handle, sensor)
        except _VERSION_MISMATCH:
            pass  # an older driver or pynvml: try the unversioned call
        except pynvml.NVMLError:
            return None
    return _field(_nvml("nvmlDeviceGetTemperature"), handle, sensor)


def _field_value(handle: Any, field_id: int | None) -> int | float | None:
    """One nvmlDeviceGetFieldValues reading, or None when unsupported."""
    if field_id is None:
        return None
    values = _field(_nvml("nvmlDeviceGetFieldValues"), handle, [field_id])
    if not values:
        return None
    value = values[0]
    if value.nvmlReturn != pynvml.NVML_SUCCESS:
        return None
    member = {
        getattr(pynvml, "NVML_VALUE_TYPE_DOUBLE", 0): "dVal",
        getattr(pynvml, "NVML_VALUE_TYPE_UNSIGNED_INT", 1): "uiVal",
        getattr(pynvml, "NVML_VALUE_TYPE_UNSIGNED_LONG", 2): "ulVal",
        getattr(pynvml, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", 3): "ullVal",
        getattr(pynvml, "NVML_VALUE_TYPE_SIGNED_LONG_LONG", 4): "sllVal",
        getattr(pynvml, "NVML_VALUE_TYPE_SIGNED_INT", 5): "siVal",
        getattr(pynvml, "NVML_VALUE_TYPE_UNSIGNED_SHORT", 6): "usVal",
    }.get(value.valueType)
    return None if member is None else getattr(value.value, member)


def _clock_event_reasons(handle: Any) -> tuple[str, ...] | None:
    mask = _field(_nvml("nvmlDeviceGetCurrentClocksEventReasons"), handle)
    if mask is None:  # pynvml or driver from before the rename
        mask = _field(_nvml("nvmlDeviceGetCurrentClocksThrottleReasons"), handle)
    return None if mask is None else decode_clock_event_reasons(mask)


def _processes(handle: Any) -> tuple[GpuProcess, ...] | None:
    procs = _field(_nvml("nvmlDeviceGetComputeRunningProcesses"), handle)
    if procs is None:  # a driver without the _v3 call the unversioned wrapper uses
        procs = _field(_nvml("nvmlDeviceGetComputeRunningProcesses_v2"), handle)
    if procs is None:
        return None
    return tuple(
        GpuProcess(pid=int(p.pid), used_memory_bytes=getattr(p, "usedGpuMemory", None))
        for p in procs
    )


def _sample(index: int, handle: Any, *, pcie_throughput: bool) -> GpuSample:
    memory = _field(_nvml("nvmlDeviceGetMemoryInfo"), handle)
    utilization = _field(_nvml("nvmlDeviceGetUtilizationRates"), handle)
    ecc = _nvml("nvmlDeviceGetTotalEccErrors")
    clock = _nvml("nvmlDeviceGetClockInfo")
    remapped = _field(_nvml("nvmlDeviceGetRemappedRows"), handle)
    pci = _field(_nvml("nvmlDeviceGetPciInfo"), handle)
    mig = _field(_nvml("nvmlDeviceGetMigMode"), handle)
    throughput = _nvml("nvmlDeviceGetPcieThroughput") if pcie_throughput else None
    return GpuSample(
        index=index,
        uuid=_text(_field(_nvml("nvmlDeviceGetUUID"), handle)),
        name=_text(_field(_nvml("nvmlDeviceGetName"), handle)),
        memory_total_bytes=None if memory is None else memory.total,
        memory_used_bytes=None if memory is None else memory.used,
        memory_free_bytes=None if memory is None else memory.free,
        utilization_gpu_pct=None if utilization is None else utilization.gpu,
        utilization_memory_pct=None if utilization is None else utilization.memory,
        temperature_c=_temperature(handle),
        memory_temperature_c=_as_int(
            _field_value(handle, getattr(pynvml, "NVML_FI_DEV_MEMORY_TEMP", None))
        ),
        power_w=_milli(_field(_nvml("nvmlDeviceGetPowerUsage"), handle)),
        power_limit_w=_milli(_field(_nvml("nvmlDeviceGetEnforcedPowerLimit"), handle)),
        energy_mj=_field(_nvml("nvmlDeviceGetTotalEnergyConsumption"), handle),
        sm_clock_mhz=_field(clock, handle, pynvml.NVML_CLOCK_SM),
        memory_clock_mhz=_field(clock, handle, pynvml.NVML_CLOCK_MEM),
        ecc_corrected=_field(
            ecc, handle, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC
        ),
        ecc_uncorrected=_field(
            ecc, handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
        ),
        remapped_rows_correctable=None if remapped is None else remapped[0],
        remapped_rows_uncorrectable=None if remapped is None else remapped[1],
        remapped_rows_pending=None if remapped is None else bool(remapped[2]),
        remapped_rows_failure=None if remapped is None else bool(remapped[3]),
        pcie_bus_id=None if pci is None else _text(pci.busId),
        pcie_tx_kbps=_field(throughput, handle, pynvml.NVML_PCIE_UTIL_TX_BYTES),
        pcie_rx_kbps=_field(throughput, handle, pynvml.NVML_PCIE_UTIL_RX_BYTES),
        mig_mode=None if mig is None else mig[0] == pynvml.NVML_DEVICE_MIG_ENABLE,
        throttle_reasons=_clock_event_reasons(handle),
        processes=_processes(handle),
    )


def _unreadable(index: int) -> GpuSample:
    """A GPU that NVML counts but cannot open (e.g. "GPU is lost"): every reading None."""
    values: dict[str, Any] = {f.name: None for f in fields(GpuSample)}
    values["index"] = index
    return GpuSample(**values)


def collect(*, pcie_throughput: bool = True) -> HostGpus:
    """Snapshot every GPU on this host. Never raises for NVML errors.

    ``pcie_throughput=False`` skips the PCIe TX/RX counters, which NVML measures over a 20 ms
    window per call (two calls per GPU).
    """
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return HostGpus(
            driver_version=None, cuda_driver_version=None, gpus=(), error=_init_error(exc)
        )
    try:
        driver = _text(_field(_nvml("nvmlSystemGetDriverVersion")))
        cuda = _cuda_version(_field(_nvml("nvmlSystemGetCudaDriverVersion")))
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            return HostGpus(driver, cuda, (), f"cannot count GPUs: {exc}")
        gpus: list[GpuSample] = []
        problems: list[str] = []
        for index in range(count):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            except pynvml.NVMLError as exc:
                problems.append(f"GPU {index}: {exc}")
                gpus.append(_unreadable(index))
                continue
            gpus.append(_sample(index, handle, pcie_throughput=pcie_throughput))
        return HostGpus(driver, cuda, tuple(gpus), "; ".join(problems) or None)
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def main() -> int:
    print(json.dumps(asdict(collect()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

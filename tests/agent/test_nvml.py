"""The NVML adapter against a fake pynvml: two GPUs, one fully featured, one that supports little."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from appliance.agent import nvml
from appliance.agent.nvml import GpuProcess, GpuSample, HostGpus, collect

FULL = "gpu-full"
BARE = "gpu-bare"


def _unsupported(*_args: Any, **_kwargs: Any) -> Any:
    raise pynvml.NVMLError_NotSupported


class FakeNvml:
    """Stands in for libnvidia-ml: records init/shutdown, answers per handle."""

    def __init__(self, handles: tuple[str, ...] = (FULL, BARE)) -> None:
        self.handles = handles
        self.inits = 0
        self.shutdowns = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
        for name in dir(self):
            if name.startswith("nvml"):
                monkeypatch.setattr(pynvml, name, getattr(self, name))
        return self

    def _full(self, handle: str) -> None:
        """Raise NotSupported unless the handle is the fully featured GPU."""
        if handle != FULL:
            raise pynvml.NVMLError_NotSupported

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return len(self.handles)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return self.handles[index]

    def nvmlDeviceGetName(self, handle: str) -> str | bytes:
        return b"NVIDIA H100 80GB HBM3" if handle == FULL else "NVIDIA T4"

    def nvmlDeviceGetUUID(self, handle: str) -> str | bytes:
        return b"GPU-aaaa" if handle == FULL else "GPU-bbbb"

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> Any:
        self._full(handle)
        return SimpleNamespace(total=80 * 2**30, used=10 * 2**30, free=70 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> Any:
        self._full(handle)
        return SimpleNamespace(gpu=87, memory=41)

    def nvmlDeviceGetTemperatureV(self, handle: str, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        self._full(handle)
        return 61

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:
        self._full(handle)
        return 60

    def nvmlDeviceGetFieldValues(self, handle: str, field_ids: list[int]) -> list[Any]:
        assert field_ids == [pynvml.NVML_FI_DEV_MEMORY_TEMP]
        if handle != FULL:
            return [SimpleNamespace(nvmlReturn=pynvml.NVML_ERROR_NOT_SUPPORTED, valueType=1)]
        return [
            SimpleNamespace(
                nvmlReturn=pynvml.NVML_SUCCESS,
                valueType=pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
                value=SimpleNamespace(uiVal=72),
            )
        ]

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        self._full(handle)
        return 312_456  # mW

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: str) -> int:
        self._full(handle)
        return 700_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        self._full(handle)
        return 123_456_789

    def nvmlDeviceGetClockInfo(self, handle: str, clock: int) -> int:
        self._full(handle)
        return {pynvml.NVML_CLOCK_SM: 1980, pynvml.NVML_CLOCK_MEM: 2619}[clock]

    def nvmlDeviceGetTotalEccErrors(self, handle: str, kind: int, counter: int) -> int:
        assert counter == pynvml.NVML_VOLATILE_ECC
        self._full(handle)
        return {
            pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED: 3,
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED: 0,
        }[kind]

    def nvmlDeviceGetRemappedRows(self, handle: str) -> tuple[int, int, int, int]:
        self._full(handle)
        return (2, 1, 1, 0)

    def nvmlDeviceGetPciInfo(self, handle: str) -> Any:
        self._full(handle)
        return SimpleNamespace(busId=b"00000000:19:00.0")

    def nvmlDeviceGetPcieThroughput(self, handle: str, counter: int) -> int:
        self._full(handle)
        return {pynvml.NVML_PCIE_UTIL_TX_BYTES: 1500, pynvml.NVML_PCIE_UTIL_RX_BYTES: 900}[counter]

    def nvmlDeviceGetMigMode(self, handle: str) -> list[int]:
        self._full(handle)
        return [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_ENABLE]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: str) -> int:
        self._full(handle)
        return pynvml.nvmlClocksEventReasonSwPowerCap | pynvml.nvmlClocksEventReasonHwSlowdown

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: str) -> int:
        self._full(handle)
        return 0

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[Any]:
        self._full(handle)
        return [
            SimpleNamespace(pid=4242, usedGpuMemory=8 * 2**30),
            SimpleNamespace(pid=4243, usedGpuMemory=None),
        ]

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: str) -> list[Any]:
        self._full(handle)
        return []


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    return FakeNvml().install(monkeypatch)


def test_full_gpu_reports_every_field(fake: FakeNvml) -> None:
    host = collect()

    assert host.error is None
    assert host.driver_version == "550.54.15"
    assert host.cuda_driver_version == "12.4"
    assert len(host.gpus) == 2
    assert host.gpus[0] == GpuSample(
        index=0,
        uuid="GPU-aaaa",
        name="NVIDIA H100 80GB HBM3",
        memory_total_bytes=80 * 2**30,
        memory_used_bytes=10 * 2**30,
        memory_free_bytes=70 * 2**30,
        utilization_gpu_pct=87,
        utilization_memory_pct=41,
        temperature_c=61,
        memory_temperature_c=72,
        power_w=312.456,
        power_limit_w=700.0,
        energy_mj=123_456_789,
        sm_clock_mhz=1980,
        memory_clock_mhz=2619,
        ecc_corrected=3,
        ecc_uncorrected=0,
        remapped_rows_correctable=2,
        remapped_rows_uncorrectable=1,
        remapped_rows_pending=True,
        remapped_rows_failure=False,
        pcie_bus_id="00000000:19:00.0",
        pcie_tx_kbps=1500,
        pcie_rx_kbps=900,
        mig_mode=False,
        throttle_reasons=("sw_power_cap", "hw_slowdown"),
        processes=(GpuProcess(4242, 8 * 2**30), GpuProcess(4243, None)),
    )


def test_unsupported_readings_are_none_not_zero(fake: FakeNvml) -> None:
    bare = collect().gpus[1]

    assert bare.index == 1
    assert bare.uuid == "GPU-bbbb"
    assert bare.name == "NVIDIA T4"
    readings = {k: v for k, v in asdict(bare).items() if k not in {"index", "uuid", "name"}}
    assert readings, "the sample has readings"
    assert all(v is None for v in readings.values()), readings


def test_library_not_found_means_no_gpus_and_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml().install(monkeypatch)

    def missing() -> None:
        raise pynvml.NVMLError_LibraryNotFound

    monkeypatch.setattr(pynvml, "nvmlInit", missing)

    host = collect()

    assert host.gpus == ()
    assert host.driver_version is None
    assert host.error is not None
    assert "NVML library not found" in host.error
    assert fake.shutdowns == 0  # nothing to shut down after a failed init


def test_other_init_error_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml().install(monkeypatch)
    monkeypatch.setattr(pynvml, "nvmlInit", _unsupported)

    host = collect()

    assert host.gpus == ()
    assert host.error == "NVML initialisation failed: Not Supported"


def test_shutdown_is_called(fake: FakeNvml) -> None:
    collect()

    assert (fake.inits, fake.shutdowns) == (1, 1)


def test_shutdown_is_called_when_collection_fails(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(_index: int) -> str:
        raise RuntimeError("bug")

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", boom)

    with pytest.raises(RuntimeError):
        collect()
    assert fake.shutdowns == 1


def test_shutdown_error_is_swallowed(fake: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlShutdown", _unsupported)

    assert len(collect().gpus) == 2


def test_lost_gpu_is_listed_without_readings(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handle(index: int) -> str:
        if index == 1:
            raise pynvml.NVMLError_GpuIsLost
        return FULL

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", handle)

    host = collect()

    assert [g.index for g in host.gpus] == [0, 1]
    assert host.gpus[0].uuid == "GPU-aaaa"
    assert host.gpus[1].uuid is None
    assert host.error == "GPU 1: GPU is lost"


def test_device_count_failure(fake: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", _unsupported)

    host = collect()

    assert host.gpus == ()
    assert host.driver_version == "550.54.15"
    assert host.error == "cannot count GPUs: Not Supported"
    assert fake.shutdowns == 1


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (0, ()),
        (0x1, ("gpu_idle",)),
        (0x4 | 0x8 | 0x40, ("sw_power_cap", "hw_slowdown", "hw_thermal_slowdown")),
        (
            0x2 | 0x10 | 0x20 | 0x80 | 0x100,
            (
                "applications_clocks_setting",
                "sync_boost",
                "sw_thermal_slowdown",
                "hw_power_brake_slowdown",
                "display_clock_setting",
            ),
        ),
        (0x200 | 0x400, ("board_limit", "reliability")),
        (0x4 | 0x1000_0000, ("sw_power_cap", "unknown_0x10000000")),
    ],
)
def test_clock_event_reasons_are_decoded(mask: int, expected: tuple[str, ...]) -> None:
    assert nvml.decode_clock_event_reasons(mask) == expected


def test_decoding_falls_back_to_throttle_reason_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in dir(pynvml):
        if name.startswith("nvmlClocksEventReason"):
            monkeypatch.delattr(pynvml, name)

    assert nvml.decode_clock_event_reasons(0x4 | 0x20) == ("sw_power_cap", "sw_thermal_slowdown")


def test_older_pynvml_throttle_function_is_used(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda _h: 0x1)

    assert collect().gpus[0].throttle_reasons == ("gpu_idle",)


def test_temperature_falls_back_to_unversioned_call(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    def old_driver(_handle: str, _sensor: int) -> int:
        raise pynvml.NVMLError_FunctionNotFound

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTemperatureV", old_driver)
    assert collect().gpus[0].temperature_c == 60

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTemperatureV", lambda _h: 0)  # TypeError
    assert collect().gpus[0].temperature_c == 60

    monkeypatch.delattr(pynvml, "nvmlDeviceGetTemperatureV")
    assert collect().gpus[0].temperature_c == 60


def test_processes_fall_back_when_driver_lacks_v3(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    def mismatch(_handle: str) -> list[Any]:
        raise pynvml.NVMLLibraryMismatchError("no _v3 in this driver")

    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", mismatch)

    assert collect().gpus[0].processes == ()


def test_power_is_converted_from_milliwatts(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", lambda _h: 1)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetEnforcedPowerLimit", lambda _h: 350_000)

    gpu = collect().gpus[0]

    assert gpu.power_w == pytest.approx(0.001)
    assert gpu.power_limit_w == 350.0
    assert isinstance(gpu.power_limit_w, float)


def test_zero_readings_stay_zero(fake: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", lambda _h: 0)
    monkeypatch.setattr(
        pynvml, "nvmlDeviceGetUtilizationRates", lambda _h: SimpleNamespace(gpu=0, memory=0)
    )

    gpu = collect().gpus[0]

    assert gpu.power_w == 0.0
    assert gpu.utilization_gpu_pct == 0


def test_bytes_strings_are_decoded(fake: FakeNvml) -> None:
    host = collect()

    assert isinstance(host.driver_version, str)
    assert host.gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert host.gpus[0].uuid == "GPU-aaaa"
    assert host.gpus[0].pcie_bus_id == "00000000:19:00.0"


def test_field_helper() -> None:
    assert nvml._field(lambda a, b: a + b, 1, 2) == 3
    assert nvml._field(_unsupported) is None
    assert nvml._field(None) is None
    with pytest.raises(ZeroDivisionError):
        nvml._field(lambda: 1 / 0)


def test_to_dict_is_json_ready(fake: FakeNvml) -> None:
    host = collect()

    data = json.loads(json.dumps(host.to_dict()))

    assert data["gpus"][0]["processes"] == [
        {"pid": 4242, "used_memory_bytes": 8 * 2**30},
        {"pid": 4243, "used_memory_bytes": None},
    ]
    assert data["gpus"][0]["throttle_reasons"] == ["sw_power_cap", "hw_slowdown"]
    assert data["gpus"][1]["power_w"] is None
    assert host.gpus[0].to_dict()["index"] == 0
    assert host.gpus[0].processes[0].to_dict() == {"pid": 4242, "used_memory_bytes": 8 * 2**30}
    assert HostGpus(None, None, (), "x").to_dict() == {
        "driver_version": None,
        "cuda_driver_version": None,
        "gpus": (),
        "error": "x",
    }


def test_module_runs_without_django_settings_or_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m appliance.agent.nvml`` prints JSON and exits 0 on whatever this host has."""
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    result = subprocess.run(
        [sys.executable, "-m", "appliance.agent.nvml"],
        cwd=Path(__file__).resolve().parents[2],  # the repository root, where appliance/ lives
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"driver_version", "cuda_driver_version", "gpus", "error"}
    if not data["gpus"]:
        assert data["error"]


def test_module_does_not_import_django() -> None:
    tree = ast.parse(Path(nvml.__file__).read_text(encoding="utf-8"))
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported
    assert not [name for name in imported if name.split(".")[0] == "django"]

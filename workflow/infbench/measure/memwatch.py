"""Sample a server's memory while it runs: process-tree RSS on the host, NVML per leased GPU."""

from __future__ import annotations

import threading

import psutil

from infbench.handoff import GpuMemory, MemoryReport


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all its descendants (engines fork workers)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


class _Nvml:
    """NVML through nvidia-ml-py when it and a driver are present; otherwise no GPU figures."""

    def __init__(self, gpu_ids: list[str]):
        self.handles = []
        if not gpu_ids:
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handles = [self._handle(pynvml, i) for i in gpu_ids]
        except Exception:  # no library, no driver, or an id NVML does not know: measure host memory only
            self.handles = []

    @staticmethod
    def _handle(pynvml, gpu_id: str) -> tuple[int, object]:
        """NVML numbers GPUs as the host does (CUDA_VISIBLE_DEVICES never renumbers it); a scheduler
        may hand out UUIDs (GPU-...) instead of indices."""
        if gpu_id.isdigit():
            return int(gpu_id), pynvml.nvmlDeviceGetHandleByIndex(int(gpu_id))
        handle = pynvml.nvmlDeviceGetHandleByUUID(gpu_id)
        return int(pynvml.nvmlDeviceGetIndex(handle)), handle

    def pci_device_ids(self) -> dict[int, int | None]:
        """Each GPU's PCI device id (pciDeviceId holds device << 16 | vendor): with the name, what the
        decode bound matches against its catalogue."""
        ids: dict[int, int | None] = {}
        for index, handle in self.handles:
            try:
                ids[index] = int(self.nvml.nvmlDeviceGetPciInfo(handle).pciDeviceId) >> 16
            except Exception:  # an old driver or a GPU NVML cannot describe: matched by name only
                ids[index] = None
        return ids

    def read(self) -> list[tuple[int, str, int, int]]:
        out = []
        for index, handle in self.handles:
            info = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            name = self.nvml.nvmlDeviceGetName(handle)
            out.append((index, name if isinstance(name, str) else name.decode(), info.total, info.used))
        return out


class MemoryWatcher:
    """Background thread; call mark_idle() once the server is healthy, stop() at the end."""

    def __init__(self, pid: int, report: MemoryReport, gpu_ids: list[str]):
        self.pid = pid
        self.report = report
        self.nvml = _Nvml(gpu_ids)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # mark_idle (main thread) and the sampler touch the same report
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def mark_idle(self) -> None:
        with self._lock:
            self._mark_idle()

    def _mark_idle(self) -> None:
        self.report.rss_idle_bytes = tree_rss_bytes(self.pid)
        gpus = {g.index: g for g in self.report.gpus}
        for index, name, total, used in self.nvml.read():
            gpu = gpus.setdefault(index, GpuMemory(index=index, name=name, total_bytes=total))
            gpu.used_idle_bytes = used
        for index, pci_id in self.nvml.pci_device_ids().items():
            if index in gpus:
                gpus[index].pci_device_id = pci_id
        self.report.gpus = sorted(gpus.values(), key=lambda g: g.index)
        self._sample_unlocked()

    def _sample(self) -> None:
        with self._lock:
            self._sample_unlocked()

    def _sample_unlocked(self) -> None:
        self.report.samples += 1
        self.report.rss_peak_bytes = max(self.report.rss_peak_bytes, tree_rss_bytes(self.pid))
        gpus = {g.index: g for g in self.report.gpus}
        for index, name, total, used in self.nvml.read():
            gpu = gpus.setdefault(index, GpuMemory(index=index, name=name, total_bytes=total))
            gpu.used_peak_bytes = max(gpu.used_peak_bytes, used)
        self.report.gpus = sorted(gpus.values(), key=lambda g: g.index)

    def _loop(self) -> None:
        while not self._stop.wait(self.report.interval_s):
            self._sample()

    def stop(self) -> MemoryReport:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()
        return self.report

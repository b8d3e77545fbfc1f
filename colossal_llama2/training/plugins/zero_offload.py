"""zero2_cpu's optimizer step, pipelined: the host's Adam runs while gradients and weights cross PCIe.

With ``cpu_offload`` the fp32 master weights and Adam states live in host memory. colossalai 0.5.0's step then,
one parameter after another and each waiting for the last: casts the gradient shard to fp32 on the GPU and copies
it to ordinary (pageable) host memory, runs Adam over the whole model on the host, and copies each fp32 master back
to the GPU, again pageable, before casting it to the working dtype. Every byte crosses PCIe in fp32 through the
driver's staging buffers, and neither direction overlaps the host's update.

``offload_step`` cuts the update into chunks of ``OFFLOAD_CHUNK_NUMEL`` master elements (a large weight is split
over several) and runs three things at once:

* a download stream casts the next chunk's gradient shards to fp32 into a GPU staging buffer and copies it into
  pinned host memory (DMA at full PCIe speed, no host thread involved);
* the host runs the Adam update of this chunk (colossalai's CPU Adam kernel for HybridAdam, the same call its
  step makes);
* an upload stream copies the previous chunk's fp32 masters into a GPU staging buffer and casts them into their
  slots of the working weights. The masters are page-locked in place once (``cudaHostRegister``), so this is
  DMA too: the host spends no time on casts or copies, only on Adam.

Two buffers of each kind alternate, so the step's time is that of its slowest part (normally the host's Adam)
plus one chunk, not the sum of all three. Page-locking costs nothing extra in memory (the masters' own pages are
locked, 4 bytes per parameter); where the driver refuses it, the uploads still happen, synchronously. On several
ranks each weight is all-gathered in place after the whole update (not yet overlapped with it).

The numbers are the library's: the same kernel on the same fp32 gradients; the clipping factor is handed to the
kernel (which divides) instead of a multiplication by its inverse beforehand, a difference at fp32 rounding.
The optimizer's state keeps its layout (``step``, ``exp_avg``, ``exp_avg_sq`` per master tensor), so
checkpoints load either way.
tests/scripts/zero_step_equivalence.py (GPU, HybridAdam) and tests/scripts/zero_offload_equivalence.py (CPU,
torch's AdamW) compare it with the library's step on the same gradients.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ...utils.logging import get_logger
from .zero_step_parts import begin_step, params_with_grads, working_slot

logger = get_logger(__name__)

# Master elements per pipelined chunk: 128 MiB of fp32 gradients. At 7b, ~200 chunks, each a host Adam pass of
# some milliseconds, so the first download and the last upload (not overlapped) are a small part of the step.
OFFLOAD_CHUNK_NUMEL = 32 << 20


@dataclass(frozen=True)
class Segment:
    """A contiguous run of one parameter's elements, placed at ``offset`` in its chunk's buffers."""
    master: torch.Tensor  # fp32, host: flat view of the master shard
    grad: torch.Tensor  # working dtype, GPU: the same elements of the gradient shard
    slot: torch.Tensor  # working dtype, GPU: the same elements of this rank's slot in the working weight
    state_of: torch.Tensor  # the master tensor whose optimizer state this segment updates
    start: int  # where the segment begins in it
    group: dict
    offset: int

    @property
    def numel(self) -> int:
        return self.master.numel()

    def state(self, optimizer, key: str) -> torch.Tensor:
        return optimizer.state[self.state_of][key].view(-1)[self.start:self.start + self.numel]


def chunked_segments(rows: list[tuple], chunk_numel: int) -> list[list[Segment]]:
    """Chunks of at most ``chunk_numel`` elements from (master, grad, slot, group) rows in order, splitting a
    parameter that does not fit in what is left of a chunk."""
    chunks, current, used = [], [], 0
    for master, grad, slot, group in rows:
        flat_master, flat_grad, flat_slot = master.view(-1), grad.view(-1), slot.view(-1)
        start = 0
        while start < master.numel():
            n = min(master.numel() - start, chunk_numel - used)
            current.append(Segment(flat_master[start:start + n], flat_grad[start:start + n],
                                   flat_slot[start:start + n], master, start, group, used))
            start, used = start + n, used + n
            if used == chunk_numel:
                chunks.append(current)
                current, used = [], 0
    return chunks + [current] if current else chunks


class HostAdam:
    """The host half of an offloaded optimizer: its state's initialisation and the update of one chunk. HybridAdam
    runs colossalai's CPU Adam kernel (the library's own call, which also divides by the clipping factor); torch's
    AdamW (fused, on the host) its fused kernel."""

    def __init__(self, optimizer):
        from colossalai.nn.optimizer import HybridAdam

        self.optimizer = optimizer
        self.hybrid = isinstance(optimizer, HybridAdam)

    @staticmethod
    def supports(optimizer) -> bool:
        from colossalai.nn.optimizer import HybridAdam

        if type(optimizer) is HybridAdam:
            return getattr(optimizer, "offloader", None) is None  # NVMe offload moves states around the update
        return (type(optimizer) is torch.optim.AdamW and all(g.get("fused") and not g["amsgrad"]
                                                             and not g["maximize"] for g in optimizer.param_groups))

    def count_step(self, master: torch.Tensor) -> None:
        state = self.optimizer.state[master]
        if len(state) == 0:
            state["step"] = 0 if self.hybrid else torch.zeros((), dtype=torch.float32, device=master.device)
            state["exp_avg"] = torch.zeros_like(master)
            state["exp_avg_sq"] = torch.zeros_like(master)
        state["step"] += 1

    def update(self, chunk: list[Segment], grads: torch.Tensor, div_scale: float) -> None:
        """Adam over the chunk's masters; ``grads``: the chunk's fp32 gradients, at the segments' offsets."""
        opt = self.optimizer
        if self.hybrid:
            for seg in chunk:
                group = seg.group
                beta1, beta2 = group["betas"]
                opt.cpu_adam_op.step(opt.state[seg.state_of]["step"], group["lr"], beta1, beta2, group["eps"],
                                     group["weight_decay"], group["bias_correction"], seg.master,
                                     grads[seg.offset:seg.offset + seg.numel], seg.state(opt, "exp_avg"),
                                     seg.state(opt, "exp_avg_sq"), div_scale if div_scale != 1.0 else -1)
            return
        if div_scale != 1.0:  # as the library's clipping: one multiplication before the step
            grads[:sum(seg.numel for seg in chunk)].mul_(1.0 / div_scale)
        for seg in chunk:
            group = seg.group
            beta1, beta2 = group["betas"]
            torch._fused_adamw_([seg.master], [grads[seg.offset:seg.offset + seg.numel]],
                                [seg.state(opt, "exp_avg")], [seg.state(opt, "exp_avg_sq")], [],
                                [opt.state[seg.state_of]["step"]], amsgrad=False, lr=group["lr"], beta1=beta1,
                                beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)


class OffloadPipe:
    """The double buffers, streams and events of ``offload_step``, made once and kept between steps. Without
    CUDA (the CPU tests) the same order runs with ordinary buffers and no streams."""

    def __init__(self, chunk_numel: int, device: torch.device):
        self.cuda = device.type == "cuda"
        self.chunk_numel = chunk_numel
        self.host_grads = [torch.empty(chunk_numel, dtype=torch.float32, pin_memory=self.cuda) for _ in range(2)]
        if self.cuda:
            self.grad_staging = [torch.empty(chunk_numel, dtype=torch.float32, device=device) for _ in range(2)]
            self.master_staging = [torch.empty(chunk_numel, dtype=torch.float32, device=device) for _ in range(2)]
            self.down, self.up = torch.cuda.Stream(device), torch.cuda.Stream(device)
            self.downloaded = [torch.cuda.Event() for _ in range(2)]

    def download(self, chunk: list[Segment], buffer: int) -> None:
        """Start copying the chunk's gradients, as fp32, into host buffer ``buffer``."""
        total = sum(seg.numel for seg in chunk)
        if not self.cuda:
            torch._foreach_copy_([self.host_grads[buffer][s.offset:s.offset + s.numel] for s in chunk],
                                 [s.grad for s in chunk])
            return
        with torch.cuda.stream(self.down):
            staging = self.grad_staging[buffer]
            torch._foreach_copy_([staging[s.offset:s.offset + s.numel] for s in chunk], [s.grad for s in chunk])
            self.host_grads[buffer][:total].copy_(staging[:total], non_blocking=True)
            self.downloaded[buffer].record()

    def wait_download(self, buffer: int) -> torch.Tensor:
        if self.cuda:
            self.downloaded[buffer].synchronize()
        return self.host_grads[buffer]

    def upload(self, chunk: list[Segment], buffer: int) -> None:
        """Start copying the chunk's updated fp32 masters to the GPU and casting them into the working weights.
        The host may change a master again only after this is done: the next step's update waits for its
        gradients, which come after this step's uploads on the GPU."""
        if not self.cuda:
            torch._foreach_copy_([s.slot for s in chunk], [s.master for s in chunk])
            return
        staging = self.master_staging[buffer]
        with torch.cuda.stream(self.up):
            pieces = [staging[s.offset:s.offset + s.numel] for s in chunk]
            for piece, s in zip(pieces, chunk):
                piece.copy_(s.master, non_blocking=True)
            torch._foreach_copy_([s.slot for s in chunk], pieces)

    def run(self, chunks: list[list[Segment]], update) -> None:
        """``update(chunk, host_grads)`` for every chunk, the next chunk's download and the previous one's upload
        running meanwhile; on CUDA the current stream then waits for the last upload (the host does not)."""
        if self.cuda:
            current = torch.cuda.current_stream()
            self.down.wait_stream(current)  # the gradients are complete
            self.up.wait_stream(current)  # and nothing queued before still reads the weights
        if chunks:
            self.download(chunks[0], 0)
        for i, chunk in enumerate(chunks):
            if i + 1 < len(chunks):
                self.download(chunks[i + 1], (i + 1) % 2)
            update(chunk, self.wait_download(i % 2))
            self.upload(chunk, i % 2)
        if self.cuda:
            current.wait_stream(self.up)


def offload_step(self, closure=None):
    """LowLevelZeroOptimizer.step with ``cpu_offload`` (see the module docstring)."""

    div_scale = begin_step(self, closure)
    if div_scale is None:
        return
    rows, gathers = [], []
    for group_id in range(self.num_param_groups):
        group = self.optim.param_groups[group_id]
        for working, master, grad in params_with_grads(self, group_id):
            padded, slot, world_size = working_slot(self, working, master)
            self._host_adam.count_step(master)
            rows.append((master, grad, slot, group))
            if world_size > 1:
                gathers.append((padded, slot, self.param_to_pg[working]))
    self._offload_pipe.run(chunked_segments(rows, self._offload_pipe.chunk_numel),
                           lambda chunk, grads: self._host_adam.update(chunk, grads, div_scale))
    for handle in [dist.all_gather_into_tensor(p, s, group=pg, async_op=True) for p, s, pg in gathers]:
        handle.wait()


def install_offload_step(inner, chunk_numel: int | None = None) -> str | None:
    """Put ``offload_step`` on a LowLevelZeroOptimizer with ``cpu_offload`` whose optimizer it can drive; returns
    what was installed, for the log, or None."""
    if not (inner._cpu_offload and inner._master_weights and HostAdam.supports(inner.optim)
            and not inner._overlap_allgather and not inner._fp8_communication and len(inner.pg_to_grad_store) == 1):
        return None
    import types

    from colossalai.accelerator import get_accelerator

    device = torch.device(get_accelerator().get_current_device())
    inner._host_adam = HostAdam(inner.optim)
    inner._offload_pipe = OffloadPipe(chunk_numel or OFFLOAD_CHUNK_NUMEL, device)
    what = ("offloaded step pipelined: gradients down and weights up by DMA while the host updates "
            "(training/plugins/zero_offload.py)")
    if device.type == "cuda":
        warning = host_thread_warning(torch.get_num_threads(), len(os.sched_getaffinity(0)),
                                      int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if warning:
            logger.warning("%s", warning)
        masters = [m for group in inner._master_param_groups_of_current_rank.values() for m in group]
        locked = page_lock(masters)
        total = sum(m.numel() * m.element_size() for m in masters)
        what += f"; {locked / 2**30:.1f} of {total / 2**30:.1f} GiB of master weights page-locked"
    inner.step = types.MethodType(offload_step, inner)
    return what


def host_thread_warning(threads: int, cores: int, local_ranks: int) -> str | None:
    """What to do when each rank's host Adam gets far fewer threads than its share of the cores: torchrun sets
    OMP_NUM_THREADS=1 for several local ranks when it is unset, and the update is the offloaded step's pace."""
    share = cores // max(local_ranks, 1)
    if threads * 2 > share:
        return None
    return (f"zero2_cpu: the host's Adam runs on {threads} thread(s) per rank ({local_ranks} ranks on {cores} "
            f"cores), and it sets the step's pace; export OMP_NUM_THREADS={share} before launching (torchrun "
            f"sets 1 for several ranks when it is unset)")


def page_lock(tensors: list[torch.Tensor]) -> int:
    """Page-lock each host tensor's memory where it is (``cudaHostRegister``; unlike ``pin_memory()`` no copy and no
    rounding up of the allocation), so copies from it to the GPU are asynchronous DMA; unlocked when the tensor
    is freed. Returns how many bytes were locked; the others (the driver refused) still copy, synchronously."""
    import weakref

    cudart = torch.cuda.cudart()
    locked = 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes == 0 or tensor.is_pinned():
            continue
        if int(cudart.cudaHostRegister(tensor.data_ptr(), nbytes, 0)) == 0:
            weakref.finalize(tensor, cudart.cudaHostUnregister, tensor.data_ptr())
            locked += nbytes
    return locked

import CBLAS

/// Keeps memory that the process frees for its own later use instead of returning it to the kernel.
///
/// A forward pass allocates its activations afresh (about 125 MB for GPT-2 small on 128 tokens,
/// 340 MB with every hook cached). With glibc's defaults those blocks are unmapped or trimmed
/// when freed, and the next call page-faults them back in, zeroed by the kernel: 32 000 faults
/// and about a quarter of the forward's time on 2 cores. Call once, first thing in `main`.
public enum MemoryTuning {
    public static func keepFreedMemory() {
        #if os(Linux)
        // Blocks up to 32 MiB (glibc's largest allowed threshold) come from the heap, and the heap
        // is only trimmed above 1 GiB of free space at its top.
        _ = mallopt(M_MMAP_THRESHOLD, 32 << 20)
        _ = mallopt(M_TRIM_THRESHOLD, 1 << 30)
        #endif
    }
}

import CBLAS

/// Keeps memory that the process frees for its own later use instead of returning it to the kernel.
///
/// Every pass takes its activations from one `calloc`ed arena, freed when the pass ends. With
/// glibc's defaults a large block is mapped afresh and unmapped when freed, so the next pass
/// page-faults it back in, page by page, zeroed by the kernel. With these settings an arena up to
/// 32 MiB (glibc's largest allowed mmap threshold: a forward over a short batch) comes from the
/// heap and stays there for the next pass; larger ones (retained passes for a backward) are mapped
/// each time unless they come from an `ArenaPool`, as training's do. Call once, first thing in `main`.
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

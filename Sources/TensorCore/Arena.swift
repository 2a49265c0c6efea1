import Foundation

/// One zero-filled allocation of Float32 cut into views: the activations of one forward pass, or
/// one copy of a model's parameters. Views stay valid as long as the arena lives.
public final class Arena: @unchecked Sendable {
    // @unchecked: the buffer is written by the pass that owns it, one pass at a time.
    public let base: UnsafeMutablePointer<Float>
    public let capacity: Int
    public private(set) var used = 0

    /// Throws `MemoryError` when the machine does not have the memory (checked first: Linux
    /// lends what it does not have), or when the allocation fails.
    public init(capacity: Int) throws(MemoryError) {
        self.capacity = capacity
        let (bytes, overflow) = max(capacity, 1).multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
        if overflow { throw MemoryError(bytes: Int.max, available: nil) }
        try MemoryBudget.check(bytes: bytes)
        // calloc: a large arena comes zeroed from fresh pages, with no pass of its own over
        // them (a retained pass's arena is hundreds of MB at 8×128).
        guard let memory = calloc(max(capacity, 1), MemoryLayout<Float>.stride) else {
            throw MemoryError(bytes: bytes, available: nil)
        }
        base = memory.bindMemory(to: Float.self, capacity: max(capacity, 1))
    }

    /// A zero-filled arena of `capacity` floats, recycled from `pool` when there is one.
    public static func make(capacity: Int, pool: ArenaPool?) throws(MemoryError) -> Arena {
        if let pool { return try pool.arena(capacity: capacity) }
        return try Arena(capacity: capacity)
    }

    deinit { free(base) }

    /// The next `count` floats. Views are 16-float (64-byte) aligned.
    public func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        precondition(used + count <= capacity, "arena of \(capacity) floats cannot hold \(used + count)")
        let view = base + used
        used += (count + 15) & ~15
        return view
    }

    /// Floats `take(count)` will use, with alignment, for sizing an arena before allocating it.
    public static func footprint(_ counts: [Int]) -> Int { counts.reduce(0) { $0 + (($1 + 15) & ~15) } }

    /// Sets every float to zero (a gradient arena before a backward pass).
    public func zero() { zeroFloats(base, count: max(capacity, 1)) }

    /// Zeroes the arena and hands its floats out again from the start.
    func reset() {
        zero()
        used = 0
    }
}

/// Arenas kept for reuse by passes of the same shapes (training runs the same batch shape step
/// after step): an arena above glibc's 32 MiB mmap threshold is otherwise mapped afresh each
/// pass and page-faulted in, zero by zero — a tenth of a training step. A recycled arena is
/// zeroed again with `memset`, which is several times cheaper than the faults.
public final class ArenaPool: @unchecked Sendable {
    // @unchecked: every access holds `lock`.
    private var free: [Int: [Arena]] = [:]
    private let lock = NSLock()

    public init() {}

    /// A zero-filled arena of exactly `capacity` floats, recycled when one is free.
    public func arena(capacity: Int) throws(MemoryError) -> Arena {
        lock.lock()
        let recycled = free[capacity]?.popLast()
        lock.unlock()
        guard let recycled else { return try Arena(capacity: capacity) }
        recycled.reset()
        return recycled
    }

    /// Returns `arena` for later use.
    public func recycle(_ arena: Arena) {
        lock.lock()
        free[arena.capacity, default: []].append(arena)
        lock.unlock()
    }
}

/// Shorthands for kernel signatures.
public typealias FloatPointer = UnsafeMutablePointer<Float>

/// Sets `count` floats to 0, split over the cores when large (a training step clears its
/// gradients and recycled activation buffers, hundreds of MB, every step).
public func zeroFloats(_ x: FloatPointer, count: Int) {
    parallelChunks(count, minimum: 1 << 20) { lo, hi in (x + lo).update(repeating: 0, count: hi - lo) }
}
public typealias ConstFloatPointer = UnsafePointer<Float>

/// Hands a raw pointer to parallel workers that write disjoint ranges.
public struct UnsafeSendable<P>: @unchecked Sendable {
    public let value: P
    public init(_ value: P) { self.value = value }
}

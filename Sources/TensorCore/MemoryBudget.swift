import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An allocation lnlens refused, or that the system refused: one line with the figure.
public struct MemoryError: LocalizedError, Equatable, Sendable {
    /// Bytes asked for.
    public let bytes: Int
    /// Bytes the machine had available then (nil: the allocation itself failed).
    public let available: Int?

    public var errorDescription: String? {
        if let available {
            return "this needs \(MemoryBudget.format(bytes)) more memory but the machine has \(MemoryBudget.format(available)) available"
        }
        return "the system refused \(MemoryBudget.format(bytes)) of memory (ulimit -v or the machine's limit)"
    }
}

/// How much memory the process may still take: checked before every large allocation, so that a
/// batch or model too large for the machine is an error with the figure instead of an abort or
/// the kernel's OOM killer (Linux lends memory it does not have: calloc succeeds, the first
/// touch of the pages kills the process).
public enum MemoryBudget {
    /// Allocations below this are not checked (the check reads /proc).
    static let checkAbove = 64 << 20

    /// Bytes available to this process now: the smaller of the kernel's MemAvailable and what the
    /// cgroup (a container's or a Slurm job's limit) still allows; nil when neither is known.
    public static var availableBytes: Int? {
        var best: Int?
        if let meminfo = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
           let line = meminfo.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
           let kb = Int(line.split(separator: " ").dropFirst().first ?? "") {
            best = kb * 1024
        }
        if let max = cgroupValue("memory.max"), let current = cgroupValue("memory.current") {
            best = Swift.min(best ?? Int.max, Swift.max(0, max - current))
        }
        return best
    }

    /// A number from the process's cgroup v2 files (nil for "max" or when absent).
    private static func cgroupValue(_ file: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/sys/fs/cgroup/\(file)", encoding: .utf8) else { return nil }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Throws `MemoryError` when `bytes` more would not fit in what is available.
    public static func check(bytes: Int) throws(MemoryError) {
        guard bytes > checkAbove, let available = availableBytes else { return }
        if bytes > available { throw MemoryError(bytes: bytes, available: available) }
    }

    /// "1.50 GB", "312 MB".
    public static func format(_ bytes: Int) -> String {
        let b = Double(bytes)
        if b >= 1e12 { return String(format: "%.1f TB", b / 1e12) }
        if b >= 1e9 { return String(format: "%.2f GB", b / 1e9) }
        return String(format: "%.0f MB", b / 1e6)
    }
}

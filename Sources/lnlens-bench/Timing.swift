import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Monotonic wall clock in seconds.
@inline(__always)
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// CPU time of the whole process (all threads), user + system, in seconds.
func processCPUTime() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Wall times of `runs` calls of `body` after `warmup` untimed ones, and the CPU cores the
/// process kept busy on average while timing (CPU time / wall time; 2 means both cores).
/// Also the minor page faults per call: fresh memory the kernel had to map and zero.
func measure(warmup: Int, runs: Int, _ body: () throws -> Void) rethrows -> Timing {
    for _ in 0..<warmup { try body() }
    var times: [Double] = []
    times.reserveCapacity(runs)
    let faults0 = minorFaults(), cpu0 = processCPUTime(), wall0 = now()
    for _ in 0..<runs {
        let t0 = now()
        try body()
        times.append(now() - t0)
    }
    let wall = now() - wall0
    return Timing(seconds: times, cores: wall > 0 ? (processCPUTime() - cpu0) / wall : 0,
                  faultsPerCall: Double(minorFaults() - faults0) / Double(max(runs, 1)))
}

/// Times several bodies in rounds — each body once per round, in turn — so that a slow spell on
/// a shared machine hits every body alike and their medians stay comparable.
func measureInRounds(warmup: Int, runs: Int, _ bodies: [() throws -> Void]) throws -> [Timing] {
    for body in bodies { for _ in 0..<warmup { try body() } }
    var seconds = [[Double]](repeating: [], count: bodies.count)
    var cpu = [Double](repeating: 0, count: bodies.count)
    var faults = [Int](repeating: 0, count: bodies.count)
    for _ in 0..<runs {
        for (i, body) in bodies.enumerated() {
            let f0 = minorFaults(), c0 = processCPUTime(), t0 = now()
            try body()
            let t1 = now()
            seconds[i].append(t1 - t0)
            cpu[i] += processCPUTime() - c0
            faults[i] += minorFaults() - f0
        }
    }
    return bodies.indices.map { i in
        let wall = seconds[i].reduce(0, +)
        return Timing(seconds: seconds[i], cores: wall > 0 ? cpu[i] / wall : 0,
                      faultsPerCall: Double(faults[i]) / Double(max(runs, 1)))
    }
}

struct Timing {
    let seconds: [Double]
    let cores: Double
    let faultsPerCall: Double
}

/// Minor page faults of the process so far.
func minorFaults() -> Int {
    var u = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
    return Int(u.ru_minflt)
}

/// min / median / max of a sample, in the sample's unit.
struct Summary: Codable {
    let min: Double
    let median: Double
    let max: Double

    init(_ xs: [Double]) {
        let s = xs.sorted()
        min = s.first ?? .nan
        max = s.last ?? .nan
        if s.isEmpty {
            median = .nan
        } else if s.count % 2 == 1 {
            median = s[s.count / 2]
        } else {
            median = (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
    }
}

/// Fields of /proc/self/status such as VmHWM and VmRSS, in MiB.
func procStatusMiB(_ field: String) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard parts.count >= 2, let kb = Double(parts[1]) else { return nil }
        return kb / 1024
    }
    return nil
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0: write 5 to /proc/self/clear_refs), so a later
/// VmHWM is the peak of what ran since. Returns false where that is not allowed.
func resetPeakRSS() -> Bool {
    guard let h = fopen("/proc/self/clear_refs", "w") else { return false }
    defer { fclose(h) }
    return fputs("5", h) >= 0 && fflush(h) == 0
}

/// The 1-minute load average, to read the numbers against (other builds share the cores).
func loadAverage() -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8),
          let first = text.split(separator: " ").first else { return nil }
    return Double(first)
}

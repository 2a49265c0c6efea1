import Foundation

/// One timed quantity: wall time per call and, when its work is counted, the FLOP rate.
struct Measurement: Codable {
    /// "sgemm", "forward", "profile", "dla", …: the table groups rows by it.
    let section: String
    let name: String
    let ms: Summary
    /// Floating-point operations per call, in GFLOP (nil when not counted).
    let gflop: Double?
    /// Rates from the max / median / min times (so `min` is the slowest run).
    let gflops: Summary?
    /// Median rate divided by the sgemm reference rate for the same work (see docs/bench.md).
    let vsSgemm: Double?
    /// CPU time / wall time while timing: about 2 when both cores were busy for us.
    let cores: Double?
    /// Minor page faults per call (nil when not counted).
    let faults: Double?
    let note: String?

    init(section: String, name: String, seconds: [Double], cores: Double?, faults: Double? = nil,
         gflop: Double? = nil, reference: Double? = nil, note: String? = nil) {
        self.faults = faults
        self.section = section
        self.name = name
        self.ms = Summary(seconds.map { $0 * 1e3 })
        self.gflop = gflop
        if let g = gflop {
            let rates = Summary(seconds.map { g / $0 })
            self.gflops = rates
            self.vsSgemm = reference.map { rates.median / $0 }
        } else {
            self.gflops = nil
            self.vsSgemm = nil
        }
        self.cores = cores
        self.note = note
    }

    enum CodingKeys: String, CodingKey {
        case section, name, ms, gflop, gflops, cores, note
        case vsSgemm = "vs_sgemm", faults = "minor_faults_per_call"
    }
}

/// Everything a run prints, also as the `--json` object.
struct BenchReport: Codable {
    struct BLAS: Codable {
        let coreName: String
        let threads: Int
        let coretypeEnv: String?
        let config: String
        enum CodingKeys: String, CodingKey {
            case coreName = "core_name", threads, config
            case coretypeEnv = "openblas_coretype"
        }
    }
    struct Setup: Codable {
        let model: String
        let parameters: Int
        let batch: Int
        let tokens: Int
        let warmup: Int
        let runs: Int
        let seed: UInt64
        let buildSeconds: Double
        let cpus: Int
        let loadAverage1m: Double?
        enum CodingKeys: String, CodingKey {
            case model, parameters, batch, tokens, warmup, runs, seed, cpus
            case buildSeconds = "build_seconds", loadAverage1m = "load_average_1m"
        }
    }
    struct Memory: Codable {
        /// VmHWM right after the model was built (weights made, then processed).
        let peakAfterBuildMiB: Double?
        /// VmHWM over the measurements only (reset after the build), nil where the reset failed.
        let peakDuringMeasurementsMiB: Double?
        /// VmHWM at the end over the whole process, when the reset failed.
        let peakProcessMiB: Double?
        let rssEndMiB: Double?
        enum CodingKeys: String, CodingKey {
            case peakAfterBuildMiB = "peak_after_build_mib"
            case peakDuringMeasurementsMiB = "peak_during_measurements_mib"
            case peakProcessMiB = "peak_process_mib"
            case rssEndMiB = "rss_end_mib"
        }
    }

    let blas: BLAS
    let setup: Setup
    var measurements: [Measurement]
    var derived: [String: Double]
    var memory: Memory?

    func json() -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf",
                                                                  nan: "nan")
        guard let data = try? enc.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    func table() -> String {
        var lines: [String] = []
        lines.append("lnlens-bench: \(setup.model), \(setup.parameters / 1_000_000)M parameters, "
            + "B=\(setup.batch) T=\(setup.tokens), \(setup.warmup) warm-up + \(setup.runs) timed runs, seed \(setup.seed)")
        lines.append("OpenBLAS: core \(blas.coreName), \(blas.threads) threads, OPENBLAS_CORETYPE="
            + "\(blas.coretypeEnv ?? "(unset)"); \(setup.cpus) CPUs, load average "
            + "\(setup.loadAverage1m.map { fmt($0, 2) } ?? "?"); model built in \(fmt(setup.buildSeconds, 1)) s")
        var section = ""
        let header = pad("", 46) + pad("ms min", 10) + pad("median", 10) + pad("max", 10)
            + pad("GFLOP", 8) + pad("GFLOP/s", 9) + pad("vs sgemm", 9) + pad("cores", 6) + pad("faults", 8)
        for m in measurements {
            if m.section != section {
                section = m.section
                lines.append("")
                lines.append("[\(section)]" + String(repeating: " ", count: max(0, 46 - section.count - 2))
                    + String(header.dropFirst(46)))
            }
            var row = pad("  " + m.name, 46) + pad(fmt(m.ms.min, 2), 10) + pad(fmt(m.ms.median, 2), 10)
                + pad(fmt(m.ms.max, 2), 10)
            row += pad(m.gflop.map { fmt($0, 2) } ?? "", 8) + pad(m.gflops.map { fmt($0.median, 1) } ?? "", 9)
                + pad(m.vsSgemm.map { fmt($0 * 100, 0) + "%" } ?? "", 9) + pad(m.cores.map { fmt($0, 2) } ?? "", 6)
                + pad(m.faults.map { fmt($0, 0) } ?? "", 8)
            lines.append(row)
            if let n = m.note { lines.append("      " + n) }
        }
        if !derived.isEmpty {
            lines.append("")
            lines.append("[derived]")
            for (k, v) in derived.sorted(by: { $0.key < $1.key }) { lines.append("  " + pad(k, 44) + fmt(v, 2)) }
        }
        if let mem = memory {
            lines.append("")
            lines.append("[memory]")
            if let v = mem.peakAfterBuildMiB { lines.append("  peak RSS after building the model (VmHWM)   \(fmt(v, 0)) MiB") }
            if let v = mem.peakDuringMeasurementsMiB {
                lines.append("  peak RSS during the measurements (VmHWM)    \(fmt(v, 0)) MiB")
            }
            if let v = mem.peakProcessMiB { lines.append("  peak RSS of the whole process (VmHWM)       \(fmt(v, 0)) MiB") }
            if let v = mem.rssEndMiB { lines.append("  RSS at the end (VmRSS)                      \(fmt(v, 0)) MiB") }
        }
        return lines.joined(separator: "\n")
    }
}

func fmt(_ x: Double, _ digits: Int) -> String {
    x.isFinite ? String(format: "%.\(digits)f", x) : "-"
}

/// Left-aligns a column of width `w`, or right-aligns numbers.
func pad(_ s: String, _ w: Int) -> String {
    if s.count >= w { return s + " " }
    let fill = String(repeating: " ", count: w - s.count)
    return s.first.map { $0.isNumber || $0 == "-" } == true && !s.hasPrefix("  ") ? fill + s : s + fill
}

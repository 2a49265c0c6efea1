import Foundation

/// Command-line options of `lnlens-bench`; parsed by hand so the benchmark needs no package
/// beyond the library modules it measures.
struct BenchOptions {
    var warmup = 3
    var runs = 15
    var tokens = 128
    var layers = 12
    var seed: UInt64 = 0
    var json = false
    var profile = false
    /// Sections to run (nil: all): core, backward, patching, dla, training.
    var only: Set<String>? = nil

    static let usage = """
        usage: lnlens-bench [--warmup N] [--runs N] [--tokens T] [--layers L] [--seed S] [--profile] [--json] [--only LIST]

        Times sgemm and the GPT-2 forward pass on a GPT-2-small-shaped model with seeded random
        weights made in memory (nothing is read or written on disk). Reports min/median/max.

          --warmup N   untimed runs before each measurement (default 3)
          --runs N     timed runs per measurement; the median is the headline (default 15)
          --tokens T   prompt length, 1...1024 (default 128)
          --layers L   number of blocks, 1...12 (default 12; fewer only for a quick smoke test)
          --seed S     seed of the weights and tokens (default 0)
          --profile    also time each phase of the forward (the real kernels, timed from inside)
          --only LIST  run only these sections: core, backward, patching, edges, dla, analyses, training (compare: the analyses' compare job alone)
          --json       print one JSON object instead of the table
        """

    /// Parses `arguments` (without the program name). Returns nil for `--help`.
    static func parse(_ arguments: [String]) throws(BenchError) -> BenchOptions? {
        var o = BenchOptions()
        var i = 0
        func value(_ flag: String) throws(BenchError) -> String {
            i += 1
            guard i < arguments.count else { throw .missingValue(flag: flag) }
            return arguments[i]
        }
        func int(_ flag: String, _ range: ClosedRange<Int>) throws(BenchError) -> Int {
            let text = try value(flag)
            guard let n = Int(text), range.contains(n) else {
                throw .badValue(flag: flag, value: text, expected: "an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }
        while i < arguments.count {
            let flag = arguments[i]
            switch flag {
            case "--warmup": o.warmup = try int(flag, 0...1000)
            case "--runs": o.runs = try int(flag, 1...1000)
            case "--tokens": o.tokens = try int(flag, 1...1024)
            case "--layers": o.layers = try int(flag, 1...12)
            case "--seed":
                let text = try value(flag)
                guard let s = UInt64(text) else {
                    throw .badValue(flag: flag, value: text, expected: "a non-negative integer")
                }
                o.seed = s
            case "--json": o.json = true
            case "--profile": o.profile = true
            case "--only": o.only = Set(try value(flag).split(separator: ",").map(String.init))
            case "-h", "--help": return nil
            default: throw .unknownFlag(flag)
            }
            i += 1
        }
        return o
    }
}

/// Errors of the benchmark's command line and of the model calls it makes.
enum BenchError: LocalizedError {
    case unknownFlag(String)
    case missingValue(flag: String)
    case badValue(flag: String, value: String, expected: String)
    case forwardFailed(String)

    var errorDescription: String? {
        switch self {
        case let .unknownFlag(f): "unknown option '\(f)': see 'lnlens-bench --help'"
        case let .missingValue(f): "option \(f) needs a value: see 'lnlens-bench --help'"
        case let .badValue(f, v, e): "option \(f) got '\(v)', expected \(e)"
        case let .forwardFailed(m): "the forward pass failed: \(m)"
        }
    }
}

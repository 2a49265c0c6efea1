import ArgumentParser
import Foundation
import Jobs
import Support
#if canImport(Glibc)
import Glibc
#endif

// What the CLI writes to the terminal and how it ends: output helpers, table cells, Ctrl-C, exit
// statuses.

/// `s` padded with spaces on the right to `width` (Foundation's `%-7@` does not pad on Linux).
func padded(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}

/// An NMAE (%) as the CLI prints it everywhere: 4 decimals from 0.01 up, below that 3 significant
/// digits in exponent form, so that the LN-free model's 8.2e-13 % is not printed as 0.0000 %
/// (exactly 0 stays 0.0000); "-" when undefined. `compact` (the per-head grid's cells, 5
/// characters): 1 decimal from 0.1 up, else 1 significant digit (`8e-13`), `>999` above 999.
func nmaeText(_ value: Double?, compact: Bool = false) -> String {
    guard let v = value, v.isFinite else { return "-" }
    if compact {
        if v >= 999.95 { return ">999" }
        return abs(v) >= 0.1 || v == 0 ? String(format: "%.1f", v) : String(format: "%.0e", v)
    }
    return abs(v) >= 0.01 || v == 0 ? String(format: "%.4f", v) : String(format: "%.2e", v)
}

/// `s` padded with spaces on the left to `width` (numbers in table columns).
func rightAligned(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
}

/// Quotes a CSV field when it needs it.
func csvField(_ s: String) -> String {
    s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
}

/// Ctrl-C during a run: the first stops it cleanly after the chunk being stored (the run is
/// marked interrupted and can be resumed); a second one ends the process at once.
enum Interrupt {
    nonisolated(unsafe) static var flag: sig_atomic_t = 0
    static var requested: Bool { flag != 0 }

    static func install() {
        // A parent may have started lnlens with SIGINT blocked (the mask is inherited: test
        // runners, some job launchers); then Ctrl-C would stay pending and never stop the run.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigprocmask(SIG_UNBLOCK, &set, nil)
        signal(SIGINT) { _ in
            Interrupt.flag = 1
            signal(SIGINT, SIG_DFL)
        }
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}

/// Prints a Codable value as pretty, key-sorted JSON on stdout.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Writes to standard error (progress, warnings) without touching stdout.
func printErr(_ s: String, terminator: String = "\n") {
    FileHandle.standardError.write(Data((s + terminator).utf8))
}

/// How lnlens ends after an error (README, "Errors and exit codes"), the same for one kind of
/// error in every command: 64 a usage error (an option or argument refused, whether by the
/// parser, `validate()` or once the command has read its input), 130 a run stopped with Ctrl-C,
/// 1 any other failure.
enum ExitStatus {
    static let failure: Int32 = 1, usage: Int32 = 64, interrupted: Int32 = 130

    /// The status of one of lnlens's own errors; nil for the argument parser's (it knows whether
    /// it printed help, 0, or refused the command line, 64).
    static func of(_ error: any Error) -> Int32? {
        switch error {
        case let error as JobError: if case .interrupted = error { interrupted } else { failure }
        case let error as CLIError: if case .usage = error { usage } else { failure }
        case is ValidationError: usage
        case is LocalizedError, is FileProblem: failure
        case let error as NSError where [NSCocoaErrorDomain, NSPOSIXErrorDomain].contains(error.domain): failure
        default: nil
        }
    }
}

import Foundation

/// What stops a report or a plot. One line each, saying what to do.
public enum ReportError: LocalizedError, Equatable, Sendable {
    case noRuns
    case duplicateRun(id: Int64)
    case wrongCommand(kind: String, runID: Int64, command: String, expected: [String])
    case nothingToDraw(kind: String, runID: Int64, reason: String)

    public var errorDescription: String? {
        switch self {
        case .noRuns:
            "give at least one run id (list them with `lnlens runs`)"
        case .duplicateRun(let id):
            "run \(id) is given twice: give each run once"
        case let .wrongCommand(kind, id, command, expected):
            "\(kind) draws \(expected.joined(separator: " or ")) runs; run \(id) is a \(command) run (see `lnlens runs`)"
        case let .nothingToDraw(kind, id, reason):
            "\(kind): run \(id) \(reason)"
        }
    }
}

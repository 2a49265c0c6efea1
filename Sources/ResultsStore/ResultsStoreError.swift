import Foundation

/// Everything that can go wrong in the results store. Each message is one line naming the
/// database path or run id and saying what to do.
public enum ResultsStoreError: LocalizedError, Equatable, Sendable {
    case databaseNotFound(path: String)
    case cannotOpen(path: String, reason: String)
    case newerSchema(path: String)
    case schemaNotCurrent(path: String)
    case notLNLensDatabase(path: String)
    case readOnly(path: String)
    case invalidRun(path: String, reason: String)
    case noSuchRun(id: Int64, path: String)
    case runNotRunning(id: Int64, status: RunStatus, path: String)
    case alreadyCompleted(id: Int64, path: String)
    case finishWithRunning(id: Int64, path: String)
    case invalidBatch(id: Int64, reason: String, path: String)
    case queryWrites(path: String)
    case querySQL(path: String, message: String)
    case unknownNamedQuery(name: String, known: [String])
    case namedQueryArguments(name: String, problem: String, usage: String)
    case diffRefused(runA: Int64, runB: Int64, reason: String)
    case sqlite(path: String, operation: String, message: String)

    public var errorDescription: String? {
        let text: String
        switch self {
        case .databaseNotFound(let path):
            text = "no results database at \(path): run an analysis (e.g. `lnlens dla`) first or pass --db with an existing file"
        case .cannotOpen(let path, let reason):
            text = "cannot open results database \(path): \(reason); check the path or pass --db with another file"
        case .newerSchema(let path):
            text = "results database \(path) was written by a newer lnlens (unknown schema migration): upgrade lnlens or use another --db"
        case .schemaNotCurrent(let path):
            text = "\(path) has no current lnlens schema (not an lnlens database, or an older one): if it is an older lnlens database, open it once with an analysis command to migrate it; otherwise check --db"
        case .notLNLensDatabase(let path):
            text = "\(path) is another program's SQLite database (it has tables but no lnlens schema): lnlens will not write into it; choose another --db"
        case .readOnly(let path):
            text = "results database \(path) was opened read-only: writes need a database opened for writing"
        case .invalidRun(let path, let reason):
            text = "cannot record run in \(path): \(reason)"
        case .noSuchRun(let id, let path):
            text = "no run \(id) in \(path): list runs with `lnlens query runs`"
        case .runNotRunning(let id, let status, let path):
            text = "run \(id) in \(path) is \(status.rawValue), not running: resume it explicitly before writing more results"
        case .alreadyCompleted(let id, let path):
            text = "run \(id) in \(path) is already completed: nothing to resume, start a new run instead"
        case .finishWithRunning(let id, let path):
            text = "run \(id) in \(path): finishRun needs a final status (completed, failed or interrupted), not running"
        case .invalidBatch(let id, let reason, let path):
            text = "batch for run \(id) in \(path) not written: \(reason)"
        case .queryWrites(let path):
            text = "`query` never writes to \(path): use a SELECT statement"
        case .querySQL(let path, let message):
            text = "query on \(path) failed: \(message)"
        case .unknownNamedQuery(let name, let known):
            text = "unknown named query '\(name)': use one of \(known.sorted().joined(separator: ", ")) or pass SQL"
        case .namedQueryArguments(let name, let problem, let usage):
            text = "named query '\(name)': \(problem); usage: \(usage)"
        case .diffRefused(let a, let b, let reason):
            text = "cannot diff runs \(a) and \(b): \(reason)"
        case .sqlite(let path, let operation, let message):
            text = "results database \(path): \(operation) failed: \(message)"
        }
        return text.oneLine
    }
}

extension String {
    /// Collapses line breaks so an error stays one line.
    var oneLine: String {
        split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .joined(separator: " ")
    }
}

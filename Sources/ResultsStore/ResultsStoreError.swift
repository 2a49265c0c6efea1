import Foundation
import Support

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
    case queryTimedOut(path: String, seconds: Double)
    case olderSchema(path: String, version: String)
    case damaged(path: String, problem: String)
    case runOwned(id: Int64, path: String, owner: ProcessIdentity, silentFor: Double, sameHost: Bool)
    case runTakenOver(id: Int64, path: String, owner: ProcessIdentity)
    case sqlite(path: String, operation: String, message: String)
    case rowsLost(id: Int64, path: String, table: String, holds: Int, recorded: Int)

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
            text = "\(path) is not an lnlens results database (no lnlens schema): check --db"
        case .notLNLensDatabase(let path):
            text = "\(path) is another program's SQLite database (it has tables but no lnlens schema): lnlens will not write into it; choose another --db"
        case .readOnly(let path):
            text = "results database \(path) was opened read-only: writes need a database opened for writing"
        case .invalidRun(let path, let reason):
            text = "cannot record run in \(path): \(reason)"
        case .noSuchRun(let id, let path):
            text = "no run \(id) in \(path): list runs with `lnlens runs --db \(path)`"
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
        case .queryTimedOut(let path, let seconds):
            text = "query on \(path) stopped after \(Int(seconds)) s (--timeout): narrow it with WHERE run_id = … or raise --timeout"
        case .olderSchema(let path, let version):
            text = "results database \(path) has the older lnlens schema \(version): migrate it once with `lnlens migrate --db \(path)` (or any command that writes to it)"
        case .damaged(let path, let problem):
            text = "results database \(path) is damaged (\(problem)); nothing was written to it. Recover what is readable with `sqlite3 \(path) .recover | sqlite3 recovered.sqlite` and use --db recovered.sqlite"
        case .runOwned(let id, let path, let owner, let silent, let sameHost):
            let age = silent.isFinite ? "last sign of life \(Int(silent)) s ago" : "no sign of life recorded"
            text = sameHost
                ? "run \(id) in \(path) is being written by process \(owner.pid) on this host (\(age)); a run has one writer: wait for it to finish, or stop that process (kill \(owner.pid)) and resume again"
                : "run \(id) in \(path) is being written by process \(owner.pid) on host \(owner.host) (\(age)); a run has one writer: wait for it, or if that process is dead, resume after \(Int(ResultsDatabase.staleAfter)) s of silence or with --force-resume"
        case .runTakenOver(let id, let path, let owner):
            text = "run \(id) in \(path) is now written by process \(owner.pid) on \(owner.host), which resumed it; this process stops writing to it"
        case .rowsLost(let id, let path, let table, let holds, let recorded):
            text = "run \(id) in \(path) holds \(holds) \(table) rows but recorded \(recorded) when it completed: the file was damaged or edited since; check it with `lnlens runs --verify --db \(path)` and redo the run or restore the file"
        case .sqlite(let path, let operation, let message):
            text = "results database \(path): \(operation) failed: \(message)"
        }
        return text.oneLine
    }
}

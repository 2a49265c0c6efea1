import Analysis
import Foundation
import ResultsStore
import Support

/// Thrown by a job's `progress` callback to stop after the chunk just stored: the run is marked
/// `interrupted` and can be resumed.
public struct JobStop: Error {
    public init() {}
}

/// Refreshes a run's heartbeat every `interval` seconds while a job works on it, so that another
/// host can tell a live writer from a dead one (`ResultsDatabase.claimRun`).
final class Heartbeat: @unchecked Sendable {
    private let timer: DispatchSourceTimer

    init(db: ResultsDatabase, runID: Int64, interval: TimeInterval = 30) {
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "lnlens.heartbeat"))
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { try? db.heartbeat(runID: runID) }
        timer.resume()
    }

    func stop() { timer.cancel() }
}

/// Starting, resuming and ending a stored run: the rules every job shares.
enum RunLifecycle {
    /// Records `run` as a new run, or — with `resume` — checks that the stored run is the same
    /// computation (command, weights, input, its size, shard, processing, and the options' `O`
    /// computation) and claims it for this process. Returns the run's id, the prompt indices
    /// already stored, and whether it was complete already.
    static func beginOrResume<O: JobOptions>(db: ResultsDatabase, run: RunRecord, options _: O.Type, resume: Int64?,
                                             forceResume: Bool) throws -> (id: Int64, done: Set<Int>, completed: Bool) {
        guard let resume else { return (try db.beginRun(run), [], false) }
        guard let record = try db.run(id: resume) else {
            throw JobError.resumeMismatch(runID: resume, reason: "there is no such run in \(db.path)")
        }
        func mismatch(_ what: String, _ stored: String, _ now: String) -> JobError {
            .resumeMismatch(runID: resume, reason: "its \(what) is \(stored) but this invocation has \(now)")
        }
        guard record.command == run.command else { throw mismatch("command", record.command, run.command) }
        guard record.modelHash == run.modelHash else { throw mismatch("model weights hash", record.modelHash, run.modelHash) }
        guard record.promptSetHash == run.promptSetHash else {
            throw mismatch("prompt set hash", String(record.promptSetHash.prefix(12)), String(run.promptSetHash.prefix(12)))
        }
        guard record.nPrompts == run.nPrompts else { throw mismatch("prompt count", "\(record.nPrompts)", "\(run.nPrompts)") }
        let storedShard = record.shardLabel ?? "none", nowShard = run.shardLabel ?? "none"
        guard storedShard == nowShard else { throw mismatch("shard (--shard)", storedShard, nowShard) }
        guard record.processingJSON == run.processingJSON else { throw mismatch("processing", record.processingJSON, run.processingJSON) }
        if let d = O.sameComputation(record.optionsJSON, run.optionsJSON) {
            throw mismatch("option \(d.key)", d.a ?? "unset", d.b ?? "unset")
        }
        if record.status == .completed { return (resume, [], true) }
        try db.claimRun(id: resume, force: forceResume)
        return (resume, try db.completedPromptIndices(runID: resume), false)
    }

    /// Runs `work` for run `id` with a heartbeat, and ends the run: `completed` with the summaries
    /// and errors `finish` computes, `interrupted` when `work` throws `JobStop` (then
    /// `JobError.interrupted` with what `doneCount` reports, in the job's `unit`, and the job's
    /// `resume`), `failed` on any other error. `aggregates` are edge rows stored with the
    /// completion (`edges`' means over prompts). `complete`, when given, stores the summaries and
    /// marks the run completed itself (a job with tables of its own: `circuit`).
    static func execute(db: ResultsDatabase, runID: Int64, total: Int, unit: String, resume: String,
                        doneCount: () -> Int, _ work: () throws -> Void,
                        finish: () throws -> (summaries: [SummaryRow], errors: [ErrorRow]),
                        aggregates: () throws -> [EdgeRow] = { [] },
                        complete: (([SummaryRow]) throws -> Void)? = nil) throws {
        let heartbeat = Heartbeat(db: db, runID: runID)
        defer { heartbeat.stop() }
        do {
            try work()
            let (summaries, errors) = try finish()
            if let complete { return try complete(summaries) }
            try db.finishRun(runID: runID, status: .completed, summaries: summaries, errors: errors, edges: try aggregates(), error: nil)
        } catch is JobStop {
            let done = doneCount()
            try? db.finishRun(runID: runID, status: .interrupted, summaries: [], error: "interrupted by the user")
            throw JobError.interrupted(runID: runID, done: done, total: total, unit: unit, resume: resume)
        } catch {
            try? db.finishRun(runID: runID, status: .failed, summaries: [], error: Files.describe(error))
            throw error
        }
    }
}

/// The task check of a run from its stored rows: the `metric` site's `clean` and `corrupt`
/// values (nil when there are none: text input, prompts without `wrong`).
func taskCheck(from stored: [ResultRow], minGap: Double) -> TaskCheck? {
    var clean: [Int: Double] = [:], corrupt: [Int: Double] = [:]
    for r in stored where r.site == StoreName.metricSite {
        if r.quantity == StoreName.clean { clean[r.promptIndex] = r.value }
        if r.quantity == StoreName.corrupt { corrupt[r.promptIndex] = r.value }
    }
    return clean.isEmpty ? nil : TaskCheck(clean: clean, corrupt: corrupt, minGap: minGap)
}

extension TaskCheck {
    /// As `summaries` rows.
    var summaryRows: [SummaryRow] {
        summaryValues.map { SummaryRow(scope: $0.scope, key: $0.key, metric: $0.metric, value: $0.value) }
    }
}

extension ResultsDatabase {
    /// Stored run `id` (its integrity verified), which must be a `command` run: `what` names what
    /// needs it in the error otherwise.
    func run(id: Int64, of command: String, for what: String) throws -> RunRecord {
        guard let run = try verifiedRun(id: id) else { throw ResultsStoreError.noSuchRun(id: id, path: path) }
        guard run.command == command else {
            throw JobError.wrongCommand(runID: id, command: run.command, expected: command, what: what)
        }
        return run
    }
}

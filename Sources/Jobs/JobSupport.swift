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
    /// computation (command, weights, input, its size, shard, processing, and the options in
    /// `resultOptionKeys`) and claims it for this process. Returns the run's id, the prompt indices
    /// already stored, and whether it was complete already.
    static func beginOrResume(db: ResultsDatabase, run: RunRecord, resume: Int64?, resultOptionKeys: [String],
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
        let stored = RunOptions.values(record.optionsJSON, keys: resultOptionKeys)
        let now = RunOptions.values(run.optionsJSON, keys: resultOptionKeys)
        guard stored == now else {
            let key = Set(stored.keys).union(now.keys).sorted().first { stored[$0] != now[$0] }!
            throw mismatch("option \(key)", stored[key] ?? "unset", now[key] ?? "unset")
        }
        if record.status == .completed { return (resume, [], true) }
        try db.claimRun(id: resume, force: forceResume)
        return (resume, try db.completedPromptIndices(runID: resume), false)
    }

    /// Runs `work` for run `id` with a heartbeat, and ends the run: `completed` with the summaries
    /// and errors `finish` computes, `interrupted` when `work` throws `JobStop` (then
    /// `JobError.interrupted` with what `doneCount` reports, in `unit`, and how to resume), `failed`
    /// on any other error.
    static func execute(db: ResultsDatabase, runID: Int64, total: Int, unit: String = "prompts", resumeHint: String? = nil,
                        doneCount: () -> Int, _ work: () throws -> Void,
                        finish: () throws -> (summaries: [SummaryRow], errors: [ErrorRow])) throws {
        let heartbeat = Heartbeat(db: db, runID: runID)
        defer { heartbeat.stop() }
        do {
            try work()
            let (summaries, errors) = try finish()
            try db.finishRun(runID: runID, status: .completed, summaries: summaries, errors: errors, error: nil)
        } catch is JobStop {
            let done = doneCount()
            try? db.finishRun(runID: runID, status: .interrupted, summaries: [], error: "interrupted by the user")
            throw JobError.interrupted(runID: runID, done: done, total: total, unit: unit,
                                       resume: resumeHint ?? "--resume \(runID)")
        } catch {
            try? db.finishRun(runID: runID, status: .failed, summaries: [], error: Files.describe(error))
            throw error
        }
    }
}

/// Reading and completing a run's `options_json` (a JSON object).
public enum RunOptions {
    /// The options object of a run (empty when `json` is not one: a hand-edited or damaged row).
    public static func object(_ json: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] ?? [:]
    }

    /// `json` with `values` set (JSON numbers, strings, booleans), keys sorted.
    public static func setting(_ json: String, _ values: [String: Any]) -> String {
        var object = object(json)
        for (k, v) in values { object[k] = v }
        return Self.json(object)
    }

    /// The number under `key`, stored as a JSON number or as its text; nil when absent.
    public static func number(_ json: String, _ key: String) -> Double? {
        switch object(json)[key] {
        case let n as NSNumber: n.doubleValue
        case let s as String: Double(s)
        default: nil
        }
    }

    /// The text under `key`; nil when absent or not text.
    public static func string(_ json: String, _ key: String) -> String? { object(json)[key] as? String }

    /// The values of `keys` (nil: every key) in an options JSON object, each as `canonical` text:
    /// what must match for a resume or a merge.
    public static func values(_ json: String, keys: [String]? = nil) -> [String: String] {
        let object = object(json)
        var out: [String: String] = [:]
        for key in keys ?? Array(object.keys) { if let v = object[key] { out[key] = canonical(v) } }
        return out
    }

    /// An option value as text that does not depend on how it was stored: runs before schema v3
    /// wrote numbers and booleans as strings ("8", "true"), later ones as JSON numbers and
    /// booleans (8, true), and Foundation prints a JSON `true` as "1". Booleans read `true` or
    /// `false`, integral numbers as integers (8.0 and "8" read "8"), other numbers in Swift's
    /// shortest round-trip form ("0.0006" and 6e-4 read "0.0006"), other text as it is.
    static func canonical(_ value: Any) -> String {
        switch JSONKind(value) {
        case .bool: return (value as? Bool) == true ? "true" : "false"
        case .integer(let i): return String(i)
        case .number(let d): return (value as? UInt64).map(String.init) ?? canonical(number: d)
        case .string:
            let s = value as! String
            if s == "true" || s == "false" { return s }
            if let i = Int(s) { return String(i) }
            if let u = UInt64(s) { return String(u) }
            if s.first.map({ $0.isNumber || $0 == "-" || $0 == "." }) == true, let d = Double(s), d.isFinite { return canonical(number: d) }
            return s
        case .null: return "null"
        case .array, .object:
            let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])
            return data.map { String(decoding: $0, as: UTF8.self) } ?? "\(value)"
        }
    }

    static func canonical(number d: Double) -> String {
        d.isFinite && d == d.rounded() && abs(d) < 9e15 ? String(Int64(d)) : "\(d)"
    }

    /// `options` as the `options_json` text a run stores: keys sorted; values JSON numbers,
    /// booleans, strings or objects as given (schema v3 and later: never numbers as strings).
    public static func json(_ options: [String: Any]) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: options, options: [.sortedKeys]) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
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

import Analysis
import Foundation
import ResultsStore

/// Stored runs read back and summarised with the analysis module's metrics (the store does no
/// math): `diff` of two DLA runs and the named queries.
public enum StoredRuns {
    /// The task check of a `dla` or `patch` run: as stored in its summaries, else (unfinished
    /// runs, runs stored before lnlens measured it) computed from its `metric` rows with the
    /// run's `--min-gap`; nil when it has none (text input, prompts without `wrong`).
    public static func taskCheck(db: ResultsDatabase, run: RunRecord) throws -> TaskCheck? {
        let stored = try db.summaries(runID: run.id!).map {
            TaskCheck.SummaryValue(scope: $0.scope, key: $0.key, metric: $0.metric, value: $0.value)
        }
        if let check = TaskCheck(summaryValues: stored) { return check }
        let minGap = run.command == StoreName.patchCommand ? PatchOptions(json: run.optionsJSON).minGap
            : run.command == StoreName.edgesCommand ? EdgeOptions(json: run.optionsJSON).minGap
            : DLAOptions(json: run.optionsJSON).minGap
        return Jobs.taskCheck(from: try db.results(runID: run.id!, site: StoreName.metricSite), minGap: minGap)
    }

    /// The DLA rows of a run (any status), as attributions.
    public static func attributions(db: ResultsDatabase, runID: Int64) throws -> [ComponentAttribution] {
        DLAJob.attributions(from: try db.results(runID: runID))
    }

    /// Runs A and B of `diff`: both stored, verified, of `command`, on the same prompt set.
    static func diffedRuns(db: ResultsDatabase, runA: Int64, runB: Int64, command: String) throws -> (RunRecord, RunRecord) {
        func refuse(_ reason: String) -> JobError { .diffRefused(runA: runA, runB: runB, reason: reason) }
        var records: [RunRecord] = []
        for id in [runA, runB] {
            guard let r = try db.verifiedRun(id: id) else { throw refuse("no run \(id) in \(db.path)") }
            guard r.command == command else {
                throw refuse("run \(id) is a \(r.command) run; diff compares two dla runs or two patch runs")
            }
            records.append(r)
        }
        let (ra, rb) = (records[0], records[1])
        if ra.promptSetHash != rb.promptSetHash {
            throw refuse("different prompt sets (\(ra.promptSetPath) hash \(ra.promptSetHash.prefix(12)) vs \(rb.promptSetPath) hash \(rb.promptSetHash.prefix(12)))")
        }
        return (ra, rb)
    }

    /// `lnlens diff A B` for two DLA runs on the same prompt set.
    public static func dlaDiff(db: ResultsDatabase, runA: Int64, runB: Int64, top: Int) throws -> DLADiff {
        func refuse(_ reason: String) -> JobError { .diffRefused(runA: runA, runB: runB, reason: reason) }
        let (ra, rb) = try diffedRuns(db: db, runA: runA, runB: runB, command: StoreName.dlaCommand)
        if ra.nPrompts != rb.nPrompts { throw refuse("different numbers of prompts (\(ra.nPrompts) vs \(rb.nPrompts))") }
        func side(_ r: RunRecord) -> DLADiff.Side {
            .init(runID: r.id!, modelPath: r.modelPath, modelHash: r.modelHash, lnMode: r.lnMode, status: r.status.rawValue)
        }
        let rowsA = try attributions(db: db, runID: runA), rowsB = try attributions(db: db, runID: runB)
        do {
            var diff = try DLADiff(a: side(ra), rowsA: rowsA, b: side(rb), rowsB: rowsB, promptSetHash: ra.promptSetHash,
                                   nPrompts: ra.nPrompts, top: top)
            diff.taskA = try taskCheck(db: db, run: ra)
            diff.taskB = try taskCheck(db: db, run: rb)
            return diff
        } catch let error as DLADiff.Refusal {
            switch error {
            case .differentHeads(let a, let b):
                throw refuse("the runs have different heads (\(a) vs \(b)); diff compares one architecture")
            case .noCommonPrompts:
                throw refuse("no prompt has head results stored in both runs")
            }
        }
    }

    /// Named query `nmae`: NMAE over all heads per dla run, recomputed from the stored rows (so
    /// also for runs still running or interrupted).
    public static func nmaeTable(db: ResultsDatabase) throws -> QueryResult {
        var rows: [[Cell]] = []
        for run in try db.runs() where run.command == StoreName.dlaCommand {
            let attributions = try attributions(db: db, runID: run.id!)
            let nmae = NMAESummary(rows: attributions).headsGlobal
            let prompts = Set(attributions.map(\.prompt)).count
            rows.append([.int(run.id!), .text(run.modelPath), .text(run.lnMode), nmae.isFinite ? .double(nmae) : .null,
                         .int(Int64(prompts)), .text(run.status.rawValue)])
        }
        return QueryResult(columns: ["id", "model", "ln_mode", "head_nmae", "prompts", "status"], rows: rows)
    }

    /// Named query `top-heads RUN_ID`: heads by mean |direct effect| over prompts, with mean DLA,
    /// mean DE and NMAE (%).
    public static func topHeads(db: ResultsDatabase, runID: Int64, limit: Int) throws -> QueryResult {
        _ = try db.run(id: runID, of: StoreName.dlaCommand, for: "top-heads")
        let heads = HeadEffect.ranked(try attributions(db: db, runID: runID))
        return QueryResult(
            columns: ["component", "layer", "head", "mean_abs_de", "mean_dla", "mean_de", "nmae", "prompts"],
            rows: heads.prefix(limit).map { h in
                [.text(h.component.description), .int(Int64(h.layer)), .int(Int64(h.head)), .double(h.meanAbsDE), .double(h.meanDLA),
                 .double(h.meanDE), h.nmae.isFinite ? .double(h.nmae) : .null, .int(Int64(h.prompts))]
            })
    }
}

/// Two patch runs on the same prompts (the LN model against its LN-free twin): each estimator's
/// errors side by side, and whether they got smaller in B.
public struct PatchDiff: Codable, Sendable {
    public struct Side: Codable, Sendable {
        public var runID: Int64
        public var modelPath: String
        public var lnMode: String
        public var status: String
        enum CodingKeys: String, CodingKey { case runID = "run_id", modelPath = "model_path", lnMode = "ln_mode", status }
    }
    public struct Entry: Codable, Sendable {
        public var site: String
        public var method: String
        public var layer: Int?
        public var normalized: Bool
        public var metric: String
        public var a: Double?
        public var b: Double?
    }
    public var a: Side
    public var b: Side
    public var promptSetHash: String
    public var entries: [Entry]
    /// Each side's task check (nil: not measured).
    public var taskA: TaskCheck?
    public var taskB: TaskCheck?

    enum CodingKeys: String, CodingKey {
        case a, b, promptSetHash = "prompt_set_hash", entries, taskA = "task_a", taskB = "task_b"
    }

    /// NMAE of `method` at `site` (all layers, raw values) in A and B.
    public func nmae(site: String, method: String, normalized: Bool = false) -> (Double?, Double?) {
        let e = entries.first { $0.site == site && $0.method == method && $0.layer == nil && $0.normalized == normalized && $0.metric == "nmae" }
        return (e?.a, e?.b)
    }
}

extension StoredRuns {
    /// `lnlens diff A B` for two patch runs on the same prompt set.
    public static func patchDiff(db: ResultsDatabase, runA: Int64, runB: Int64) throws -> PatchDiff {
        func refuse(_ reason: String) -> JobError { .diffRefused(runA: runA, runB: runB, reason: reason) }
        let (ra, rb) = try diffedRuns(db: db, runA: runA, runB: runB, command: StoreName.patchCommand)
        func errors(_ id: Int64) throws -> [String: Double] {
            var out: [String: Double] = [:]
            for e in try db.estimatorErrors(runID: id) { out["\(e.site)|\(e.method)|\(e.layer ?? -1)|\(e.normalized)|\(e.metric)"] = e.value }
            return out
        }
        let ea = try errors(runA), eb = try errors(runB)
        if ea.isEmpty || eb.isEmpty { throw refuse("a run has no estimator errors yet (it has not completed); finish it with --resume") }
        let keys = Set(ea.keys).union(eb.keys).sorted()
        let entries: [PatchDiff.Entry] = keys.map { key in
            let p = key.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            let layer = Int(p[2]).flatMap { $0 < 0 ? nil : $0 }
            func finite(_ v: Double?) -> Double? { v.flatMap { $0.isFinite ? $0 : nil } }
            return .init(site: p[0], method: p[1], layer: layer, normalized: p[3] == "true", metric: p[4],
                         a: finite(ea[key]), b: finite(eb[key]))
        }
        func side(_ r: RunRecord) -> PatchDiff.Side { .init(runID: r.id!, modelPath: r.modelPath, lnMode: r.lnMode, status: r.status.rawValue) }
        return PatchDiff(a: side(ra), b: side(rb), promptSetHash: ra.promptSetHash, entries: entries,
                         taskA: try taskCheck(db: db, run: ra), taskB: try taskCheck(db: db, run: rb))
    }
}

import Foundation
import GRDB

extension ResultsDatabase {
    /// All runs, by id.
    public func runs() throws -> [RunRecord] {
        try read("listing runs") { db in try RunRecord.order(Column("id")).fetchAll(db) }
    }

    /// One run, or nil when there is no run with that id (callers print `no run N in DB`).
    public func run(id: Int64) throws -> RunRecord? {
        try read("reading run \(id)") { db in try RunRecord.fetchOne(db, key: id) }
    }

    /// One run, after checking that a completed run still holds the result and prompt rows it
    /// recorded when it completed (`check/stored/…`; runs of older lnlens have no record and pass):
    /// readers that draw, diff or merge a run call this, so that a damaged or edited file is an
    /// error instead of silently fewer rows. nil when there is no run with that id.
    public func verifiedRun(id: Int64) throws -> RunRecord? {
        try read("checking run \(id)") { db in
            guard let run = try RunRecord.fetchOne(db, key: id) else { return nil }
            guard run.status == .completed else { return run }
            let recorded = try Row.fetchAll(db, sql: """
                SELECT metric, value FROM summaries WHERE run_id = ? AND scope = ? AND key = ?
                """, arguments: [id, StoreName.scopeCheck, StoreName.storedCounts])
            let stored = try Self.storedCounts(db, runID: id)
            for row in recorded {
                let metric: String = try row.decode(atIndex: 0)
                guard let value: Double = try row.decode(atIndex: 1) else { continue }
                let now = metric == StoreName.storedResults ? stored.results : metric == StoreName.storedPrompts ? stored.prompts
                    : metric == StoreName.storedEdges ? try Self.storedEdgeCount(db, runID: id) : nil
                if let now, Double(now) != value {
                    let table = metric == StoreName.storedResults ? "results" : metric == StoreName.storedPrompts ? "run_prompts" : "edges"
                    throw ResultsStoreError.rowsLost(id: id, path: path, table: table, holds: now, recorded: Int(value))
                }
            }
            return run
        }
    }

    /// The prompt indices whose chunks are stored (from `batches_done`), for resuming.
    public func completedPromptIndices(runID: Int64) throws -> Set<Int> {
        try read("reading progress of run \(runID)") { db in
            let run = try Self.runRow(db, id: runID, path: path)
            var done = Set<Int>()
            let rows = try Row.fetchAll(
                db, sql: "SELECT first_prompt, last_prompt FROM batches_done WHERE run_id = ?", arguments: [runID])
            for row in rows {
                let first: Int = try row.decode(atIndex: 0), last: Int = try row.decode(atIndex: 1)
                // A range lnlens never writes (a damaged or edited row) is an error, not a trap or a
                // set of 2^63 indices (found by the sqlite fuzz target).
                guard first >= 0, first <= last, last < max(run.nPrompts, 0) else {
                    throw ResultsStoreError.damaged(path: path, problem: "batches_done of run \(runID) holds \(first)…\(last), outside its \(run.nPrompts) prompts")
                }
                done.formUnion(first...last)
            }
            return done
        }
    }

    /// The run's prompts, by index.
    public func prompts(runID: Int64) throws -> [PromptRow] {
        try runRows("prompts", runID: runID, sql: "SELECT * FROM run_prompts WHERE run_id = ? ORDER BY prompt_index") { row in
            let tokensJSON: String? = try row.decode(forColumn: "tokens_json")
            return PromptRow(
                promptIndex: try row.decode(forColumn: "prompt_index"), prompt: try row.decode(forColumn: "prompt"),
                answer: try row.decode(forColumn: "answer"), wrong: try row.decode(forColumn: "wrong"),
                nTokens: try row.decode(forColumn: "n_tokens"), corrupt: try row.decode(forColumn: "corrupt"),
                tokens: try tokensJSON.map { try JSONDecoder().decode([String].self, from: Data($0.utf8)) })
        }
    }

    /// The run's result rows, optionally of one site and/or quantity, ordered by prompt, site,
    /// layer, position, head, quantity (absent layer/position/head first).
    public func results(runID: Int64, site: String? = nil, quantity: String? = nil) throws -> [ResultRow] {
        var sql = "SELECT prompt_index, site, layer, position, head, quantity, value FROM results WHERE run_id = ?"
        var arguments: StatementArguments = [runID]
        if let site { sql += " AND site = ?"; arguments += [site] }
        if let quantity { sql += " AND quantity = ?"; arguments += [quantity] }
        sql += " ORDER BY prompt_index, site, ifnull(layer, -1), ifnull(position, -1), ifnull(head, -1), quantity"
        return try runRows("results", runID: runID, sql: sql, arguments: arguments) {
            ResultRow(
                promptIndex: try $0.decode(atIndex: 0), site: try $0.decode(atIndex: 1), layer: try $0.decode(atIndex: 2),
                position: try $0.decode(atIndex: 3), head: try $0.decode(atIndex: 4), quantity: try $0.decode(atIndex: 5),
                value: try $0.decode(atIndex: 6))
        }
    }

    /// The run's edge rows (`aggregate`: only the aggregate rows, or only the per-prompt rows;
    /// nil: both), ordered by prompt (aggregates first), upstream, downstream, input, method.
    public func edges(runID: Int64, aggregate: Bool? = nil, method: String? = nil) throws -> [EdgeRow] {
        var sql = "SELECT prompt_index, upstream, downstream, input, method, value, n_prompts FROM edges WHERE run_id = ?"
        var arguments: StatementArguments = [runID]
        if let aggregate { sql += aggregate ? " AND prompt_index IS NULL" : " AND prompt_index IS NOT NULL" }
        if let method { sql += " AND method = ?"; arguments += [method] }
        sql += " ORDER BY ifnull(prompt_index, -1), upstream, downstream, ifnull(input, ''), method"
        return try runRows("edges", runID: runID, sql: sql, arguments: arguments) {
            EdgeRow(promptIndex: try $0.decode(atIndex: 0), upstream: try $0.decode(atIndex: 1), downstream: try $0.decode(atIndex: 2),
                    input: try $0.decode(atIndex: 3), method: try $0.decode(atIndex: 4), value: try $0.decode(atIndex: 5),
                    nPrompts: try $0.decode(atIndex: 6))
        }
    }

    /// The run's summaries, ordered by scope, key, metric. NULL values come back as NaN.
    public func summaries(runID: Int64) throws -> [SummaryRow] {
        // Not the stored-row counts (`check/stored/…`): bookkeeping for `verifiedRun`, not a result.
        try runRows("summaries", runID: runID, sql: """
            SELECT scope, key, metric, value FROM summaries WHERE run_id = ? AND NOT (scope = 'check' AND key = 'stored')
            ORDER BY scope, key, metric
            """) { row in
            let value: Double? = try row.decode(atIndex: 3)
            return SummaryRow(
                scope: try row.decode(atIndex: 0), key: try row.decode(atIndex: 1),
                metric: try row.decode(atIndex: 2), value: value ?? .nan)
        }
    }

    /// The run's estimator errors, ordered by site, method, layer (all layers first), normalised, metric.
    public func estimatorErrors(runID: Int64) throws -> [ErrorRow] {
        try runRows("estimator errors", runID: runID, sql: """
            SELECT site, method, layer, normalized, metric, value FROM estimator_errors WHERE run_id = ?
            ORDER BY site, method, ifnull(layer, -1), normalized, metric
            """) { row in
            let value: Double? = try row.decode(atIndex: 5)
            let normalized: Int = try row.decode(atIndex: 3)
            return ErrorRow(site: try row.decode(atIndex: 0), method: try row.decode(atIndex: 1),
                            layer: try row.decode(atIndex: 2), normalized: normalized != 0,
                            metric: try row.decode(atIndex: 4), value: value ?? .nan)
        }
    }

    /// The optimizer steps of a training run, by step.
    public func trainSteps(runID: Int64) throws -> [TrainStepRow] {
        try runRows("training steps", runID: runID, sql: "SELECT * FROM train_steps WHERE run_id = ? ORDER BY step") { row in
            TrainStepRow(step: try row.decode(forColumn: "step"), loss: try row.decode(forColumn: "loss"),
                         auxLoss: try row.decode(forColumn: "aux_loss"), lr: try row.decode(forColumn: "lr"),
                         gradNorm: try row.decode(forColumn: "grad_norm"), tokens: try row.decode(forColumn: "tokens"),
                         seconds: try row.decode(forColumn: "seconds"), event: try row.decode(forColumn: "event"))
        }
    }

    /// The shards a merged run was made from, by shard index.
    public func shards(runID: Int64) throws -> [ShardRow] {
        try runRows("shards", runID: runID, sql: "SELECT * FROM run_shards WHERE run_id = ? ORDER BY shard_index", Self.shardRow)
    }

    /// How many prompts, results, summaries and chunks of the run are stored.
    public func counts(runID: Int64) throws -> RunCounts {
        try read("counting rows of run \(runID)") { db in
            _ = try Self.runRow(db, id: runID, path: path)
            func count(_ table: String) throws -> Int {
                let bookkeeping = table == "summaries" ? " AND NOT (scope = 'check' AND key = 'stored')" : ""
                return try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table) WHERE run_id = ?\(bookkeeping)", arguments: [runID]) ?? 0
            }
            return RunCounts(
                prompts: try count("run_prompts"), results: try count("results"),
                summaries: try count("summaries"), batches: try count("batches_done"))
        }
    }

    /// The rows of run `runID` (an error when there is no such run) that `sql` selects (with
    /// `arguments`, by default the run id), each made into a record by `record`.
    func runRows<T>(_ what: String, runID: Int64, sql: String, arguments: StatementArguments? = nil,
                    _ record: (Row) throws -> T) throws -> [T] {
        try read("reading \(what) of run \(runID)") { db in
            _ = try Self.runRow(db, id: runID, path: path)
            return try Row.fetchAll(db, sql: sql, arguments: arguments ?? [runID]).map(record)
        }
    }

    /// The run, or `noSuchRun`.
    static func runRow(_ db: Database, id: Int64, path: String) throws -> RunRecord {
        guard let run = try RunRecord.fetchOne(db, key: id) else {
            throw ResultsStoreError.noSuchRun(id: id, path: path)
        }
        return run
    }
}

import Foundation
import GRDB

extension ResultsDatabase {
    /// All runs, by id.
    public func runs() throws -> [RunRecord] {
        try read("listing runs") { db in
            try Row.fetchAll(db, sql: "SELECT * FROM runs ORDER BY id").map(Self.runRecord)
        }
    }

    /// One run, or nil when there is no run with that id (callers print `no run N in DB`).
    public func run(id: Int64) throws -> RunRecord? {
        try read("reading run \(id)") { db in
            try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE id = ?", arguments: [id]).map(Self.runRecord)
        }
    }

    /// The prompt indices whose batches are stored (from `batches_done`), for resuming.
    public func completedPromptIndices(runID: Int64) throws -> Set<Int> {
        try read("reading progress of run \(runID)") { db in
            _ = try Self.runRow(db, id: runID, path: path)
            var done = Set<Int>()
            let rows = try Row.fetchAll(
                db, sql: "SELECT first_prompt, last_prompt FROM batches_done WHERE run_id = ?", arguments: [runID])
            for row in rows {
                let first: Int = try row.decode(atIndex: 0), last: Int = try row.decode(atIndex: 1)
                done.formUnion(first...last)
            }
            return done
        }
    }

    /// The run's prompts, by index.
    public func prompts(runID: Int64) throws -> [PromptRow] {
        try read("reading prompts of run \(runID)") { db in
            _ = try Self.runRow(db, id: runID, path: path)
            return try Row.fetchAll(
                db, sql: "SELECT * FROM run_prompts WHERE run_id = ? ORDER BY prompt_index", arguments: [runID]
            ).map { row in
                PromptRow(
                    promptIndex: try row.decode(forColumn: "prompt_index"), prompt: try row.decode(forColumn: "prompt"),
                    answer: try row.decode(forColumn: "answer"), wrong: try row.decode(forColumn: "wrong"),
                    nTokens: try row.decode(forColumn: "n_tokens"))
            }
        }
    }

    /// The run's result rows (optionally one quantity), ordered by prompt, component, quantity.
    public func results(runID: Int64, quantity: String? = nil) throws -> [ResultRow] {
        try read("reading results of run \(runID)") { db in
            _ = try Self.runRow(db, id: runID, path: path)
            let rows: [Row]
            if let quantity {
                rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT prompt_index, component, quantity, value FROM results
                        WHERE run_id = ? AND quantity = ? ORDER BY prompt_index, component, quantity
                        """,
                    arguments: [runID, quantity])
            } else {
                rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT prompt_index, component, quantity, value FROM results
                        WHERE run_id = ? ORDER BY prompt_index, component, quantity
                        """,
                    arguments: [runID])
            }
            return try rows.map {
                ResultRow(
                    promptIndex: try $0.decode(atIndex: 0), component: try $0.decode(atIndex: 1),
                    quantity: try $0.decode(atIndex: 2), value: try $0.decode(atIndex: 3))
            }
        }
    }

    /// The run's summaries, ordered by scope, key, metric. NULL values come back as NaN.
    public func summaries(runID: Int64) throws -> [SummaryRow] {
        try read("reading summaries of run \(runID)") { db in
            _ = try Self.runRow(db, id: runID, path: path)
            return try Row.fetchAll(
                db,
                sql: "SELECT scope, key, metric, value FROM summaries WHERE run_id = ? ORDER BY scope, key, metric",
                arguments: [runID]
            ).map { row in
                let value: Double? = try row.decode(atIndex: 3)
                return SummaryRow(
                    scope: try row.decode(atIndex: 0), key: try row.decode(atIndex: 1),
                    metric: try row.decode(atIndex: 2), value: value ?? .nan)
            }
        }
    }

    /// How many prompts, results, summaries and batches of the run are stored.
    public func counts(runID: Int64) throws -> RunCounts {
        try read("counting rows of run \(runID)") { db in
            _ = try Self.runRow(db, id: runID, path: path)
            func count(_ table: String) throws -> Int {
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table) WHERE run_id = ?", arguments: [runID]) ?? 0
            }
            return RunCounts(
                prompts: try count("run_prompts"), results: try count("results"),
                summaries: try count("summaries"), batches: try count("batches_done"))
        }
    }

    /// The run, or `noSuchRun`.
    static func runRow(_ db: Database, id: Int64, path: String) throws -> RunRecord {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE id = ?", arguments: [id]) else {
            throw ResultsStoreError.noSuchRun(id: id, path: path)
        }
        return try runRecord(row)
    }

    static func runRecord(_ row: Row) throws -> RunRecord {
        let status: String = try row.decode(forColumn: "status")
        return RunRecord(
            id: try row.decode(forColumn: "id"), command: try row.decode(forColumn: "command"),
            optionsJSON: try row.decode(forColumn: "options_json"), modelPath: try row.decode(forColumn: "model_path"),
            modelHash: try row.decode(forColumn: "model_hash"), lnMode: try row.decode(forColumn: "ln_mode"),
            processingJSON: try row.decode(forColumn: "processing_json"),
            promptSetPath: try row.decode(forColumn: "prompt_set_path"),
            promptSetHash: try row.decode(forColumn: "prompt_set_hash"), nPrompts: try row.decode(forColumn: "n_prompts"),
            toolVersion: try row.decode(forColumn: "tool_version"), startedAt: try row.decode(forColumn: "started_at"),
            endedAt: try row.decode(forColumn: "ended_at"), status: RunStatus(rawValue: status) ?? .failed,
            error: try row.decode(forColumn: "error"))
    }
}
